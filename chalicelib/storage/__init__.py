"""S3 storage of image objects: keys, uploads, deletes, presigned URLs."""
