"""The image-transform network."""
