"""Stand-ins for NVML (the pynvml module) and torch.cuda, so the GPU code paths run on a CPU-only CI.

`FakeNVML` has the NVML calls tunelab makes (tunelab.profiles, tunelab.monitoring) over a list of
devices; `FakeCuda` has the torch.cuda calls tunelab.monitoring makes. A device's `unsupported`
queries raise NVML's NotSupported, as MIG slices and vGPUs do; `fail_init` is a machine without
a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

GIB = 2**30


@dataclass
class FakeGpu:
    name: str
    memory_gib: float
    compute_major: int = 8
    used_gib: float = 1.0
    utilization: int = 50
    uuid: str = ""
    unsupported: frozenset = frozenset()  # of "memory", "utilization", "name"


class FakeNVML:
    """NVML's interface over a list of FakeGpu (or (name, GiB, compute major) tuples)."""

    NVML_ERROR_NOT_SUPPORTED = 3

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        def __str__(self):
            return "Not Supported"

    class NVMLError_NotFound(NVMLError):  # noqa: N801
        def __str__(self):
            return "Not Found"

    def __init__(self, devices, fail_init=False):
        self.devices = [d if isinstance(d, FakeGpu) else FakeGpu(*d) for d in devices]
        self.fail_init, self.shut_down = fail_init, False
        self.calls: list[str] = []

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.devices):
            raise self.NVMLError_NotFound()
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for device in self.devices:
            if device.uuid and device.uuid == uuid:
                return device
        raise self.NVMLError_NotFound()

    def nvmlDeviceGetName(self, handle):
        self._check(handle, "name")
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._check(handle, "memory")
        total, used = handle.memory_gib * GIB, handle.used_gib * GIB
        return SimpleNamespace(total=int(total), used=int(used), free=int(total - used))

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._check(handle, "utilization")
        return SimpleNamespace(gpu=handle.utilization, memory=handle.utilization // 2)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return handle.compute_major, 0

    def _check(self, handle, query):
        self.calls.append(query)
        if query in handle.unsupported:
            raise self.NVMLError_NotSupported()


@dataclass
class FakeCudaDevice:
    name: str
    total_gib: float
    allocated_gib: float = 2.47
    reserved_gib: float = 4.49
    peak_gib: float = 3.0
    uuid: str = ""  # as torch gives it: without NVML's "GPU-" prefix


class FakeCuda:
    """The torch.cuda calls tunelab.monitoring makes, over a list of FakeCudaDevice."""

    def __init__(self, devices):
        self.devices = list(devices)

    def is_available(self):
        return bool(self.devices)

    def device_count(self):
        return len(self.devices)

    def current_device(self):
        return 0

    def get_device_name(self, index):
        return self.devices[index].name

    def get_device_properties(self, index):
        device = self.devices[index]
        return SimpleNamespace(name=device.name, total_memory=int(device.total_gib * GIB), uuid=device.uuid)

    def memory_allocated(self, index):
        return int(self.devices[index].allocated_gib * GIB)

    def memory_reserved(self, index):
        return int(self.devices[index].reserved_gib * GIB)

    def max_memory_allocated(self, index):
        return int(self.devices[index].peak_gib * GIB)
