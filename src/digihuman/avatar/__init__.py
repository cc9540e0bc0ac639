"""Avatar preparation (once per source) and its versioned on-disk cache."""

from digihuman.avatar.store import AvatarStore, StaleAvatarError

__all__ = ["AvatarStore", "StaleAvatarError"]
