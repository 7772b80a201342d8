"""datadistill: shrink a labelled training set to a small one that trains models almost as well."""

__version__ = "0.1.0"

from .auto import auto  # noqa: E402
from .data import Dataset, DistilledSet, load  # noqa: E402
from .errors import ArtifactError, ConfigError, DatadistillError, DataError  # noqa: E402
from .guard import check_against_random  # noqa: E402
from .select import select  # noqa: E402

save = DistilledSet.save
open = DistilledSet.open  # noqa: A001 - the public name the design asks for


def __getattr__(name: str):
    # distill and evaluate pull in torch-heavy modules; import them on first use
    if name == "distill":
        from .synth import distill

        return distill
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    if name == "active":
        from .active import active

        return active
    raise AttributeError(f"module 'datadistill' has no attribute '{name}'")


__all__ = ["ArtifactError", "ConfigError", "DataError", "DatadistillError", "Dataset", "DistilledSet",
           "__version__", "active", "auto", "check_against_random", "distill", "evaluate", "load", "open", "save", "select"]

# by-name factories and registries, the DC-protocol evaluation, Dask execution (what the command line calls)
from .errors import DatadistillWarning  # noqa: E402
from .models import MODELS  # noqa: E402
from .parallel import DaskExecutor, connect, fit_distributed  # noqa: E402
from .select import REGISTRY as SELECTORS  # noqa: E402
from .select import get_selector  # noqa: E402
from .synth import REGISTRY as DISTILLERS  # noqa: E402
from .synth import evaluate_protocol, get_distiller  # noqa: E402

__all__ += ["DISTILLERS", "DaskExecutor", "DatadistillWarning", "MODELS", "SELECTORS", "connect", "evaluate_protocol",
            "fit_distributed", "get_distiller", "get_selector"]

# doors to and from numpy, pandas, torch and Hugging Face datasets
from .interop import from_arrays, from_hf, from_pandas, from_torch  # noqa: E402

__all__ += ["from_arrays", "from_hf", "from_pandas", "from_torch"]

# data larger than memory: a memory-mapped .npy or a directory of Parquet shards, read in batches
from .data.outofcore import open_out_of_core, select_out_of_core  # noqa: E402

__all__ += ["open_out_of_core", "select_out_of_core"]
