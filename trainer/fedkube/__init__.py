"""fedkube: Kubernetes-native federated learning, runnable on a laptop with the same manifest."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedkube")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
