"""Files copied verbatim into the exported Triton model repository (see ``export.triton``)."""
