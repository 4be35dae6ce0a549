"""Training data: photo folders, the LightningDataModule, bundled demo material."""
