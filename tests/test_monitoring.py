"""tunelab.monitoring: the NVML paths (present, missing, NotSupported) through stand-ins for NVML and
torch.cuda, the callback's figures and MFU arithmetic, FLOPs per token against hand counts for the
GPT-2 and Phi architectures, the peak FLOP/s table, the terminal summary and the report's section."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import tunelab.flops
from fake_gpu import FakeCuda, FakeCudaDevice, FakeGpu, FakeNVML
from tunelab.architectures import published_config
from tunelab.flops import (
    cpu_peak_flops,
    flops_per_token,
    measured_matmul_peak,
    non_embedding_parameters,
    peak_flops,
    training_matmul_flops,
)
from tunelab.models import load_model
from tunelab.monitoring import DeviceProbe, ResourceMonitor
from tunelab.nli.config import NLIRecipe
from tunelab.summary import format_summary
from tunelab.tiny_models import tiny_config

A100 = "NVIDIA A100-SXM4-80GB"


def one_gpu(name=A100, unsupported=frozenset(), **nvml_figures):
    """NVML and torch.cuda stand-ins for one GPU, matched by UUID as on a real machine."""
    nvml = FakeNVML([FakeGpu(name, 80, used_gib=10.5, utilization=87, uuid="GPU-1234", unsupported=unsupported,
                             **nvml_figures)])
    return nvml, FakeCuda([FakeCudaDevice(name, 79.3, uuid="1234")])


# ---------------------------------------------------------------------------- NVML paths

def test_nvml_present_gives_nvml_and_pytorch_figures():
    nvml, cuda = one_gpu()
    probe = DeviceProbe([0], nvml, cuda)
    assert probe.sample() == {"gpu0": {"torch_alloc_gib": 2.47, "torch_reserved_gib": 4.49, "torch_peak_alloc_gib": 3.0,
                                       "mem_used_gib": 10.5, "mem_total_gib": 80.0, "util_pct": 87.0}}
    assert probe.notes == [] and probe.device_name() == A100
    probe.close()
    assert nvml.shut_down


def test_devices_are_matched_by_uuid_whatever_cuda_visible_devices_says(monkeypatch):
    """CUDA_VISIBLE_DEVICES=1,0: CUDA's device 0 is NVML's device 1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    nvml = FakeNVML([FakeGpu("NVIDIA A40", 48, used_gib=5, uuid="GPU-aaaa"),
                     FakeGpu("NVIDIA A40", 48, used_gib=7, uuid="GPU-bbbb")])
    cuda = FakeCuda([FakeCudaDevice("NVIDIA A40", 47.5, uuid="bbbb"), FakeCudaDevice("NVIDIA A40", 47.5, uuid="aaaa")])
    sample = DeviceProbe([0, 1], nvml, cuda).sample()
    assert sample["gpu0"]["mem_used_gib"] == 7 and sample["gpu1"]["mem_used_gib"] == 5
    # Without UUIDs the visible-devices list is followed.
    for device in (*nvml.devices, *cuda.devices):
        device.uuid = ""
    assert DeviceProbe([0], nvml, cuda).sample()["gpu0"]["mem_used_gib"] == 7


@pytest.mark.parametrize("nvml", [FakeNVML([], fail_init=True), None], ids=["no-driver", "not-installed"])
def test_nvml_missing_falls_back_to_pytorch(nvml, monkeypatch):
    if nvml is None:
        monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    _, cuda = one_gpu()
    probe = DeviceProbe([0], nvml, cuda)
    assert probe.sample()["gpu0"] == {"torch_alloc_gib": 2.47, "torch_reserved_gib": 4.49, "torch_peak_alloc_gib": 3.0,
                                      "mem_used_gib": 4.49, "mem_total_gib": 79.3}
    assert len(probe.notes) == 1 and probe.notes[0].startswith("NVML unavailable")
    assert probe.device_name() == A100  # from PyTorch
    probe.close()


@pytest.mark.parametrize("name, unsupported", [
    ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", {"utilization"}),          # MIG slices report memory, not utilisation
    ("GRID A100D-40C", {"utilization", "memory"}),                   # a vGPU answering neither
    ("NVIDIA A100D-36C", {"utilization", "memory", "name"}),          # the 36 GB vGPU profile
])
def test_nvml_not_supported_falls_back_and_says_so_once(name, unsupported):
    nvml, cuda = one_gpu(name, frozenset(unsupported))
    probe = DeviceProbe([0], nvml, cuda)
    samples = [probe.sample()["gpu0"] for _ in range(3)]
    assert samples[0] == samples[2]
    assert ("util_pct" in samples[0]) == ("utilization" not in unsupported)
    if "memory" in unsupported:
        assert samples[0]["mem_used_gib"] == 4.49 and samples[0]["mem_total_gib"] == 79.3  # PyTorch's
    else:
        assert samples[0]["mem_used_gib"] == 10.5
    noted = {"utilisation", "memory"} & {{"utilization": "utilisation"}.get(q, q) for q in unsupported}
    assert len(probe.notes) == len(noted), probe.notes
    assert all("Not Supported" in note for note in probe.notes)
    for query in unsupported - {"name"}:
        assert nvml.calls.count(query) == 1, "a query NVML refused is not asked again"
    assert probe.device_name() == name


def test_real_nvml_on_this_machine_does_not_crash():
    """The real pynvml: with a driver it measures, without one (CI) it notes the fallback; never raises."""
    _, cuda = one_gpu()
    probe = DeviceProbe([0], cuda=cuda)
    figures = probe.sample()["gpu0"]
    assert figures["torch_alloc_gib"] == 2.47 and figures["mem_total_gib"] > 0
    probe.close()


def test_cpu_figures_are_resident_memory():
    figures = DeviceProbe([]).sample()["cpu"]
    assert 0 < figures["rss_gib"] <= figures["peak_rss_gib"] + 0.01


# ---------------------------------------------------------------------------- the callback

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def trainer_state():
    return SimpleNamespace(is_world_process_zero=True, global_step=0, num_input_tokens_seen=0, epoch=0.0,
                           log_history=[])


def training_args(device="cuda", bf16=True):
    return SimpleNamespace(device=torch.device(device, 0) if device == "cuda" else torch.device("cpu"), world_size=1,
                           process_index=0, per_device_train_batch_size=8, gradient_accumulation_steps=2, bf16=bf16,
                           fp16=False, gradient_checkpointing=False)


def meta_model(kind="gpt2"):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(tiny_config(kind))


def run_steps(monitor, args, state, clock, steps, seconds_per_step, tokens_per_step):
    """Drive the callback as the Trainer does for `steps` optimizer steps, then log."""
    for _ in range(steps):
        monitor.on_step_begin(args, state, None)
        clock.now += seconds_per_step
        state.num_input_tokens_seen += tokens_per_step
        state.global_step += 1
    logs = {"loss": 0.5, "learning_rate": 1e-4}
    state.log_history.append({**logs, "step": state.global_step})
    monitor.on_log(args, state, None, logs=logs)
    return logs


def test_callback_logs_memory_throughput_and_mfu(tmp_path, capsys):
    nvml, cuda = one_gpu()
    clock, args, state, model = Clock(), training_args(), trainer_state(), meta_model()
    monitor = ResourceMonitor(tmp_path, nvml=nvml, cuda=cuda, clock=clock)
    monitor.on_train_begin(args, state, None, model=model)
    assert "MFU assumes a peak of 312 TFLOP/s per device: NVIDIA A100-SXM4-80GB, dense bf16 on tensor cores" in capsys.readouterr().out

    logs = run_steps(monitor, args, state, clock, steps=4, seconds_per_step=0.5, tokens_per_step=1000)
    n = 67_072  # tiny GPT-2's non-embedding weights (hand count below), all trainable: 6N per token
    assert logs["step_time_s"] == 0.5 and logs["samples_per_s"] == 8 * 2 / 0.5 and logs["tokens_per_s"] == 2000
    assert logs["mfu_pct"] == pytest.approx(100 * 2000 * 6 * n / 312e12, rel=1e-3)
    assert logs["gpu0_mem_used_gib"] == 10.5 and logs["gpu0_util_pct"] == 87
    assert logs["gpu0_torch_alloc_gib"] == 2.47 and logs["gpu0_torch_reserved_gib"] == 4.49
    assert state.log_history[-1]["gpu0_torch_peak_alloc_gib"] == 3.0, "train_log.json gets the figures too"

    # Evaluation logs are left alone; time spent outside steps (eval, saving) is not counted.
    eval_logs = {"eval_loss": 0.4}
    monitor.on_log(args, state, None, logs=eval_logs)
    assert eval_logs == {"eval_loss": 0.4}
    clock.now += 30
    cuda.devices[0].peak_gib = 6.0
    logs = run_steps(monitor, args, state, clock, steps=2, seconds_per_step=1.0, tokens_per_step=1000)
    assert logs["step_time_s"] == 1.0 and logs["tokens_per_s"] == 1000
    monitor.on_train_end(args, state, None)

    summary = monitor.summary
    assert summary["train_steps"] == 6 and summary["real_tokens"] == 6000
    assert summary["step_time_s"] == pytest.approx(4 / 6, abs=1e-3) and summary["tokens_per_s"] == 1500
    assert summary["peak_devices"]["gpu0"]["torch_peak_alloc_gib"] == 6.0
    assert summary["flops_per_token"] == 6 * n
    written = json.loads((tmp_path / "monitoring.json").read_text())
    assert written["summary"] == summary and [s["step"] for s in written["samples"]] == [4, 6, 6]
    assert nvml.shut_down

    lines = format_summary({"timings_s": {"load": 3.0, "baseline_eval": 1.0, "train": 70.0, "finetuned_eval": 2.0,
                                          "total": 76.0}, "monitoring": summary})
    assert lines[0] == "Wall time 1 min 16 s: load 3.0 s, train 1 min 10 s, evaluate 3.0 s"
    assert lines[1].startswith("Peak memory: gpu0 6.00 GiB allocated, 4.49 GiB reserved (PyTorch), 10.50 of 80.0 GiB")
    assert "1,500 real tokens/s; MFU" in lines[2] and "312 TFLOP/s" in lines[2]


def test_callback_resumes_its_samples_and_handles_cpu_and_unknown_gpus(tmp_path, capsys):
    clock, args, state = Clock(), training_args("cpu", bf16=False), trainer_state()
    asked = []

    def cpu_peak(dtype):
        asked.append(dtype)
        return 2e11, "MFU assumes a peak of 200 GFLOP/s per process: the measured fp32 training-shaped matmul peak"

    monitor = ResourceMonitor(tmp_path, clock=clock, cpu_peak=cpu_peak)
    model = meta_model("phi")
    monitor.on_train_begin(args, state, None, model=model)
    assert asked == [torch.float32] and "measured fp32 training-shaped matmul peak" in capsys.readouterr().out
    logs = run_steps(monitor, args, state, clock, steps=2, seconds_per_step=0.25, tokens_per_step=100)
    assert logs["cpu_rss_gib"] > 0 and logs["tokens_per_s"] == 400
    assert logs["mfu_pct"] == pytest.approx(100 * 400 * flops_per_token(model)[0] / 2e11, rel=1e-3)
    monitor.on_train_end(args, state, None)
    assert "; MFU " in format_summary({"monitoring": monitor.summary})[-1]
    assert "measured fp32 training-shaped matmul peak" in format_summary({"monitoring": monitor.summary})[-1]

    resumed = ResourceMonitor(tmp_path, clock=clock)  # a restarted run keeps the earlier samples
    assert [s["step"] for s in resumed.samples] == [2, 2]

    nvml, cuda = one_gpu("NVIDIA GeForce RTX 4090")
    unknown = ResourceMonitor(None, nvml=nvml, cuda=cuda, clock=clock)
    unknown.on_train_begin(training_args(), trainer_state(), None, model=meta_model())
    assert "MFU omitted: peak FLOP/s of 'NVIDIA GeForce RTX 4090' unknown" in capsys.readouterr().out


# ---------------------------------------------------------------------------- FLOPs and peaks

def test_a_cpu_peak_is_measured_once_per_machine_and_precision_and_cached(tmp_path):
    measured = []

    def measure(dtype):
        measured.append(dtype)
        return {torch.bfloat16: 4.4e11, torch.float32: 1.9e11}[dtype]

    cache = tmp_path / "matmul_peak.json"
    peak, note = cpu_peak_flops(torch.bfloat16, measure, cache)
    assert peak == 4.4e11 and "440 GFLOP/s" in note and "measured bf16 training-shaped matmul" in note
    assert "measured now" in note and measured == [torch.bfloat16]
    again, note = cpu_peak_flops(torch.bfloat16, measure, cache)  # a later run on the same machine
    assert again == 4.4e11 and f"cached in {cache}" in note and measured == [torch.bfloat16]
    assert cpu_peak_flops(torch.float32, measure, cache)[0] == 1.9e11 and measured == [torch.bfloat16, torch.float32]
    [key, _] = json.loads(cache.read_text())
    assert f"{torch.get_num_threads()} threads | bf16 | torch {torch.__version__}" in key
    assert peak_flops(None, torch.bfloat16, lambda dtype: cpu_peak_flops(dtype, measure, cache))[0] == 4.4e11
    assert measured == [torch.bfloat16, torch.float32]


def test_an_unreadable_peak_cache_is_measured_again(tmp_path):
    cache = tmp_path / "matmul_peak.json"
    cache.write_text("not json")
    assert cpu_peak_flops(torch.float32, lambda dtype: 1e11, cache)[0] == 1e11
    assert list(json.loads(cache.read_text()).values()) == [1e11]


def test_the_peak_probe_counts_the_flops_of_its_training_pass(monkeypatch):
    """Two matmuls forward, three backward (activation gradient, both weight gradients), 2·m·n·k each."""
    assert training_matmul_flops(512) == 5 * 2 * 512 * 576 * 1536
    monkeypatch.setattr(tunelab.flops, "training_matmul_seconds", lambda dtype, rows: rows / 1000)
    assert measured_matmul_peak(torch.float32) == pytest.approx(5 * 2 * 576 * 1536 * 1000)


def gpt2_hand_count(d, layers, inner):
    """Per layer: ln_1 2d, c_attn d·3d+3d, attn c_proj d·d+d, ln_2 2d, c_fc d·inner+inner, mlp c_proj inner·d+d;
    then ln_f 2d. Token and position embeddings and the (tied) head are left out."""
    return layers * (2 * d + 3 * d * d + 3 * d + d * d + d + 2 * d + d * inner + inner + inner * d + d) + 2 * d


def phi_hand_count(d, layers, inner):
    """Per layer: input_layernorm 2d, q/k/v/dense each d·d+d, fc1 d·inner+inner, fc2 inner·d+d; then the final
    layernorm 2d. The embedding and lm_head (51200 × 2560 + bias for phi-2) are left out."""
    return layers * (2 * d + 4 * (d * d + d) + d * inner + inner + inner * d + d) + 2 * d


@pytest.mark.parametrize("config, expected", [
    (published_config("gpt2-large"), gpt2_hand_count(1280, 36, 4 * 1280)),   # 708,390,400
    (published_config("phi-2"), phi_hand_count(2560, 32, 10240)),             # 2,517,488,640
    (tiny_config("gpt2"), gpt2_hand_count(64, 2, 128)),
    (tiny_config("phi"), phi_hand_count(64, 2, 128)),
], ids=["gpt2-large", "phi-2", "tiny-gpt2", "tiny-phi"])
def test_full_fine_tuning_is_six_flops_per_weight(config, expected):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert non_embedding_parameters(model) == (0, expected)
    assert flops_per_token(model)[0] == 6 * expected
    assert flops_per_token(model, gradient_checkpointing=True)[0] == 8 * expected


def test_hand_counts_match_the_published_parameter_totals():
    """Adding back what the hand counts leave out gives gpt2-large's and phi-2's published totals."""
    assert gpt2_hand_count(1280, 36, 4 * 1280) + 50257 * 1280 + 1024 * 1280 == 774_030_080  # + wte, wpe
    assert phi_hand_count(2560, 32, 10240) + 51200 * 2560 + 51200 * 2560 + 51200 == 2_779_683_840  # + embed, lm_head


@pytest.mark.parametrize("kind, targets, lora_per_layer", [
    ("gpt2", ["c_attn"], 8 * (64 + 3 * 64)),                                       # r × (in + out)
    ("phi", ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], 8 * (4 * 128 + 2 * (64 + 128))),
])
def test_lora_flops_count_the_frozen_base_four_times(kind, targets, lora_per_layer):
    """LoRA on a frozen base: forward 2N + activation gradients 2N for every weight, + 2T weight gradients."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(kind))
    model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, fan_in_fan_out=kind == "gpt2"))
    base = (gpt2_hand_count if kind == "gpt2" else phi_hand_count)(64, 2, 128)
    trainable = 2 * lora_per_layer
    assert non_embedding_parameters(model) == (base, trainable)
    assert flops_per_token(model)[0] == 4 * (base + trainable) + 2 * trainable
    assert flops_per_token(model, gradient_checkpointing=True)[0] == 6 * (base + trainable) + 2 * trainable


def test_four_bit_weights_count_as_the_weights_they_hold(tiny_phi_dir):
    """The recipe's QLoRA load: packed 4-bit storage holds two weights per byte; the count is the unpacked one."""
    recipe = NLIRecipe(model_name_or_path=str(tiny_phi_dir), load_in_4bit=True, precision="fp32", lora_r=8,
                       lora_target_modules=["q_proj", "fc1"])
    frozen, trainable = non_embedding_parameters(load_model(recipe))
    assert trainable == 2 * 8 * (2 * 64 + 64 + 128)
    assert frozen == phi_hand_count(64, 2, 128)


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312),
    ("NVIDIA A100-PCIE-40GB", torch.float32, 19.5),
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989),
    ("NVIDIA H100 PCIe", torch.float16, 756),
    ("NVIDIA A40", torch.bfloat16, 149.7),
    ("NVIDIA L40S", torch.bfloat16, 362),
    ("NVIDIA L4", torch.bfloat16, 121),
    ("Tesla V100-SXM2-32GB", torch.float16, 125),
    ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", torch.bfloat16, 312 * 3 / 7),
    ("Tesla V100-SXM2-32GB", torch.bfloat16, None),   # no bf16 on Volta
    ("NVIDIA A10G", torch.bfloat16, None),            # not in the table (and not an A10)
])
def test_peak_flops_table(name, dtype, tflops):
    peak, message = peak_flops(name, dtype)
    if tflops is None:
        assert peak is None and message.startswith("MFU omitted")
    else:
        assert peak == pytest.approx(tflops * 1e12) and message.startswith("MFU assumes a peak of")


# ---------------------------------------------------------------------------- the report

def test_report_has_the_monitoring_table_and_memory_plot(tmp_path):
    from tunelab.report import write_report

    metrics = {"n": 3, "labels": ["entailment", "neutral", "contradiction"], "accuracy": 0.5, "balanced_accuracy": 0.5,
               "macro_f1": 0.5, "per_class": {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1}
                                               for label in ("entailment", "neutral", "contradiction")},
               "confusion_matrix": [[1, 0, 0], [0, 1, 0], [1, 0, 0]]}
    for model in ("baseline", "finetuned"):
        (tmp_path / "eval" / "test" / model).mkdir(parents=True)
        (tmp_path / "eval" / "test" / model / "metrics.json").write_text(json.dumps(metrics))
    devices = {"gpu0": {"torch_alloc_gib": 2.47, "torch_reserved_gib": 4.49, "torch_peak_alloc_gib": 3.1,
                        "mem_used_gib": 5.2, "mem_total_gib": 80.0, "util_pct": 91.0}}
    summary = {"step_time_s": 0.25, "samples_per_s": 32.0, "tokens_per_s": 4100.0, "mfu_pct": 12.5,
               "peak_assumed": "MFU assumes a peak of 312 TFLOP/s per device: NVIDIA A100", "peak_devices": devices,
               "flops_counting": "4N + 2T", "notes": ["NVML cannot report utilisation of GPU 0 (Not Supported)"]}
    (tmp_path / "run_info.json").write_text(json.dumps({"recipe": "demo", "monitoring": summary}))
    (tmp_path / "monitoring.json").write_text(json.dumps({"summary": summary, "samples": [
        {"step": step, "devices": devices} for step in (2, 4, 6)]}))
    report = write_report(tmp_path).read_text()
    assert "## Resources during training" in report
    assert "| gpu0 | allocated by PyTorch, GiB | 2.47 |" in report
    assert "4,100 real tokens/s" in report and "model FLOPs utilisation 12.50%" in report
    assert "Note: NVML cannot report utilisation" in report
    assert "![memory by training step, per device](memory.png)" in report
    assert (tmp_path / "report" / "memory.png").stat().st_size > 1000


def test_a_model_held_in_bf16_without_autocast_is_measured_against_the_bf16_peak(tmp_path):
    """A model held in bf16 without autocast (args.bf16 false, as under DeepSpeed): its matmuls still run in bf16."""
    asked = []
    monitor = ResourceMonitor(tmp_path, clock=Clock(), cpu_peak=lambda dtype: asked.append(dtype) or (4e11, "peak"))
    monitor.on_train_begin(training_args("cpu", bf16=False), trainer_state(), None, model=meta_model().bfloat16())
    monitor.on_train_begin(training_args("cpu", bf16=False), trainer_state(), None, model=meta_model())
    assert asked == [torch.bfloat16, torch.float32]
