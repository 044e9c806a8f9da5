"""steerlens: audit activation steering vectors for safety.

Does a steering vector weaken the model's refusals, why (overlap with the refusal direction
and subspace, and how far it moves the residual stream along them), and how to make it safe
(orthogonalisation)?
"""

__version__ = "0.3.0"

from steerlens.caa import caa_vector  # noqa: E402
from steerlens.geometry import cosine, orthogonalize, orthogonalize_subspace  # noqa: E402
from steerlens.models import load_model  # noqa: E402
from steerlens.vectors import SteeringVector  # noqa: E402

__all__ = ["SteeringVector", "caa_vector", "cosine", "load_model", "orthogonalize",
           "orthogonalize_subspace"]
