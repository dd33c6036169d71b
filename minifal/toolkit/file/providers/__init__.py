"""``fal.toolkit.file.providers``: the repositories ``File`` stores bytes in."""
