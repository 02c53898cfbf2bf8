import subprocess
import sys

HEAVY = ("torch", "optuna", "umap", "numba", "sklearn", "timm", "matplotlib")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_importing_the_package_loads_nothing_heavy():
    loaded = modules_after("import optuna_aquasurf")
    assert not loaded & set(HEAVY)


def test_expressions_need_torch_but_not_the_sampler_stack():
    loaded = modules_after("from optuna_aquasurf import ActivationFunction, SearchSpace")
    assert "torch" in loaded
    assert not loaded & {"optuna", "umap", "numba", "sklearn", "timm", "matplotlib"}


def test_sampler_does_not_load_umap_until_a_map_is_needed():
    loaded = modules_after("from optuna_aquasurf import AquaSurfSampler")
    assert "optuna" in loaded and not loaded & {"umap", "numba", "timm", "matplotlib"}
