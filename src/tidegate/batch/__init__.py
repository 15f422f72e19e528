"""The OpenAI Files and Batch APIs: file storage, files, batches and the batch runner."""
