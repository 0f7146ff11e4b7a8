"""A sample's views: the augmentation recipe (recipe.py), drawn per image with PIL in DataLoader workers (pil.py)
or per batch in tensor operations on the training device (batched.py); the evaluation transform in both forms."""
