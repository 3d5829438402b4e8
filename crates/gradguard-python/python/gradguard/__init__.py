"""gradguard: find, explain and cure exploding gradients in your own training loop.

``Guard`` runs gradguard's detectors, remedies, diagnosis and reports step by step over your
model's gradients: numpy arrays, PyTorch CPU tensors (read in place), and PyTorch tensors on
any device (measured and edited with torch ops there; see ``gradguard._torch``).
"""

from ._gradguard import Decision, Guard, __version__

__all__ = ["Guard", "Decision", "__version__"]
