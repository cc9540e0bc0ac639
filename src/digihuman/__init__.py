"""digihuman: a portrait plus speech becomes a lip-synced video or live stream."""

__version__ = "0.1.0"
