"""The `medsegcnn` command line."""
