"""steerlens: audit activation steering vectors for safety.

Does a steering vector weaken the model's refusals, why (overlap with the refusal direction
and subspace), and how to make it safe (orthogonalisation)?
"""

__version__ = "0.1.0"

import warnings  # noqa: E402

# `python -m steerlens.judges` runs a module this package has already imported (directions use
# the judges); runpy warns about that, harmlessly, since the CLI only reads shared constants.
warnings.filterwarnings("ignore", message="'steerlens.judges' found in sys.modules",
                        category=RuntimeWarning)

from steerlens.directions import (  # noqa: E402
    RefusalDirection,
    SteeringVector,
    caa_vector,
    select_refusal_direction,
)
from steerlens.geometry import cosine, orthogonalize, orthogonalize_subspace  # noqa: E402
from steerlens.models import load_model  # noqa: E402

__all__ = ["RefusalDirection", "SteeringVector", "caa_vector", "cosine", "load_model",
           "orthogonalize", "orthogonalize_subspace", "select_refusal_direction"]
