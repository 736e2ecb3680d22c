"""Command-line entry points (`quantrollout ...`)."""
