"""A fake question engine for other layers' tests: numbered questions, no bank, no network."""

from __future__ import annotations

from collections.abc import Collection

from .base import Question, QuestionCapabilities, QuestionOptions, QuestionSet


class FakeQuestions:
    name = "fake"

    def __init__(self, *, max_count: int = 20, **_: object) -> None:
        self.capabilities = QuestionCapabilities(max_count=max_count)

    def generate(
        self,
        job: str,
        count: int,
        *,
        language: str,
        seed: int,
        exclude: Collection[str] = (),
    ) -> QuestionSet:
        word = "问题" if language == "zh" else "question"
        texts = [f"{job} {word} {seed}-{i}" for i in range(count + len(exclude))]
        texts = [t for t in texts if t not in set(exclude)][:count]
        qs = tuple(Question(t, language, "other", "generated") for t in texts)
        return QuestionSet(qs, QuestionOptions(job, count, language, seed, tuple(exclude)), "fake")
