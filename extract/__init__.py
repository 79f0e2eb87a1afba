"""langneurons.extract."""
