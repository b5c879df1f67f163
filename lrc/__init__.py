"""lrc: long and rich context video MLLMs (HiCo + TPO) as swappable plugins."""

__version__ = "0.1.0"
