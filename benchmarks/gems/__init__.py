"""Gems: does Conv4Rec find liked items a user would not have picked? Studied on Coat's random exposure
(`python -m benchmarks.gems`)."""
