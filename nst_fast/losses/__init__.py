"""The loss network (frozen VGG) and the perceptual losses."""
