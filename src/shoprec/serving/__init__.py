"""Online serving: numpy steps behind the Triton models, and a local tritonserver launcher.

``runtime`` holds the steps (imported by the generated ``model.py`` files, inside Triton);
``tritonserver`` starts the tritonserver binary shipped in the nvidia-pytriton wheel. Nothing
is imported here, so that ``model.py`` pulls in only what it uses.
"""
