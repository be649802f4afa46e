"""imgpipe: S3 raw-images/ -> Lambda -> SNS -> SQS -> consumer -> S3 thumbnails/."""
