"""Known failure lines of training jobs and inference servers, each with a kind and a fix hint.

:data:`SIGNATURES` lists them (GPU/TPU/MPS and CPU out of memory, the host OOM
killer and OOMKilled containers, NCCL timeouts, watchdogs and rendezvous
timeouts, fp16/bf16 overflow and loss-scale collapse, NaN/Inf messages,
dataloader workers killed, checkpoint saves failing, disk full, CUDA and driver
errors, crash signals, jobs a scheduler cancelled, dead engines and workers and
crash-looping containers, engine watchdog timeouts, KV-cache exhaustion
(requests retracted or pre-empted), model load failures, HTTP 5xx and gateway errors,
stuck replica start-ups and failing readiness probes). :class:`SignatureMatcher`
reads one run's lines in order and adds what a single line cannot say:

- a Python traceback is one finding: its lines are grouped (the line just
  before it too, when that is an ``ERROR ... Exception during training:``
  banner), the finding points at its first line, and it is classified by the
  most specific signature its text matches (else ``python_exception``);
- fp16 overflow messages are followed as a streak: the first one is INFO
  (warm-up overflows are normal), WARNING once the scale is down to
  ``warn_scale`` or the streak is long, CRITICAL below ``min_scale``, when an
  overflow finds the scale already at ``min_scale`` (the scaler's floor: every
  step is skipped) or when the framework gives up. Iteration lines feed the
  same streak through their extracted values (:meth:`SignatureMatcher.loss_scale`):
  Megatron-LM's ``number of skipped iterations`` above 0, or a ``loss_scale``
  lower than the last one known (dynamic scalers lower it only on an overflow),
  is an overflow; a scale that grew back ends the streak;
- an error right after a checkpoint save began is a checkpoint save failure;
- repeated HTTP 5xx responses escalate from WARNING to ERROR.

Examples
--------
>>> m = SignatureMatcher()
>>> found = m.feed_many([
...     "Traceback (most recent call last):",
...     '  File "train.py", line 12, in <module>',
...     "    loss.backward()",
...     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
... ])
>>> [(f.signature, f.severity.name, f.line, len(f.lines)) for f in found]
[('cuda_oom', 'CRITICAL', 0, 4)]
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import Severity
from runwatch.models.text.launchers import PREFIX

# The shell's "Killed" in other languages (bash and coreutils under zh_CN, ja, de, ru): a job killed by SIGKILL
_KILLED_LOCALISED = "已杀死|強制終了|Getötet|Убито"


@dataclass(frozen=True, slots=True)
class Signature:
    """A known failure: a pattern, how urgent it is, what it means and what to try."""

    name: str
    severity: Severity
    pattern: re.Pattern
    title: str
    hint: str
    keys: tuple[str, ...] = ()  # lower-case words one of which every match contains (a cheap guard)


def _sig(name: str, severity: Severity, pattern: str, title: str, hint: str, flags: int = 0) -> Signature:
    return Signature(name, severity, re.compile(pattern, flags), title, hint)


C, E, W = Severity.CRITICAL, Severity.ERROR, Severity.WARNING

#: Line signatures, most specific first (a traceback takes the first one its text matches).
SIGNATURES: tuple[Signature, ...] = (
    _sig(
        "cuda_oom", C,
        r"CUDA out of memory|CUDA error: out of memory|(?<!ray\.exceptions\.)(?<!Ray)OutOfMemoryError|cudaErrorMemoryAllocation|"
        r"CUBLAS_STATUS_ALLOC_FAILED|RESOURCE_EXHAUSTED: OOM|OOM when allocating tensor(?!.{0,300}(?:device:CPU|by allocator cpu))|"
        r"HIP out of memory|"
        # XLA's allocator (JAX, TF/XLA), also when a console wrapped "Out" onto the line before
        r"Out of memory while trying to allocate \d+ bytes|^\s*of memory while trying to allocate \d+ bytes|"
        r"out of memory on device|RESOURCE_EXHAUSTED: Out of memory|Ran out of memory in memory space|"
        r"RESOURCE_EXHAUSTED: Attempting to reserve \S+ at the bottom of memory|"
        # PyTorch before 1.1 (THC): "cuda runtime error (2) : out of memory", THCudaCheck's, and 0.4's bare message
        r"cuda runtime error \(2\) : out of memory|THCudaCheck FAIL .{0,200}error=2 : out of memory|"
        r"RuntimeError: out of memory\b|"
        # PyTorch's caching allocator, also when a console wrapped "CUDA" onto the line before
        r"^\s*out of memory\. Tried to allocate \d|"
        # a C++ CUDA check macro's message: "CUDA runtime error in ::cudaMallocAsync(...): out of memory (/app/...h:112)"
        r"CUDA runtime error in .{0,200}: out of memory|\bout of memory \(/[\w/.+-]+\.(?:h|hpp|cpp|cu|cc):\d+\)|"
        # the same allocator under a memory fraction (torch.cuda.set_per_process_memory_fraction: TGI's shards)
        r"Allocation on device \d+ would exceed allowed memory|"
        r"MPS backend out of memory|No available memory for the cache blocks|cudaMalloc failed: out of memory|"
        # torch_npu (Ascend), PaddlePaddle's allocator, JAX/XLA on GPU
        r"NPU out of memory|Out of memory error on GPU \d+|RESOURCE_EXHAUSTED: Failed to allocate request for|"
        r"CUDA_ERROR_OUT_OF_MEMORY|CUDA (?:runtime|driver) error: out of memory|Error allocating device buffer|"
        r"Not enough memory\. Please try to increase --mem-fraction-static|Cuda failure 'out of memory'|"
        r"ran out of memory trying to allocate .{0,80}requested by op|"
        # TF2 eager ops, onnxruntime's BFC arena, TGI's warm-up, cuDNN's workspace
        r"[Ff]ailed to allocate memory (?:\[Op:|for requested buffer)|Not enough memory to handle \d+ prefill tokens|"
        r"CUDNN_STATUS_ALLOC_FAILED|"
        # TensorRT-LLM's executor and other engines that size their KV cache up front
        r"(?i:(?:insufficient|not enough) (?:free )?(?:GPU|device|CUDA) memory)",
        "GPU out of memory",
        "lower the micro-batch size or sequence length, enable activation checkpointing or ZeRO/FSDP sharding; "
        "for fragmentation set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
    ),
    _sig(
        "cpu_oom", C,
        r"DefaultCPUAllocator: (?:can't allocate|not enough memory)|\bMemoryError\b|Cannot allocate memory|"
        r"std::bad_alloc|Unable to allocate [\d.]+ [KMGT]i?B|OOM when allocating tensor.{0,300}(?:device:CPU|by allocator cpu)|ray\.exceptions\.OutOfMemoryError|RayOutOfMemoryError|node (?:is )?running low on memory",
        "host memory exhausted",
        "load data lazily (memory-mapped datasets), use fewer dataloader workers or a smaller prefetch_factor",
    ),
    _sig(
        "disk_full", C,
        r"(?i:no space left on device)|\bENOSPC\b|\[Errno 28\]|Disk quota exceeded|\bEDQUOT\b",
        "disk full",
        "free space or point the output/checkpoint directory at a larger volume; keep fewer checkpoints "
        "(e.g. save_total_limit)",
    ),
    _sig(
        "nccl_timeout", C,
        r"Watchdog caught collective operation timeout|watchdog (?:got stuck|thread terminated)|"
        r"ran for \d+ milliseconds before timing out|NCCL (?:communicator|operation|collective)s?\b.{0,60}timed? ?out|"
        r"\bNCCL timeout|ncclSystemError|ncclInternalError|ncclUnhandledCudaError|ncclRemoteError|NCCL error|NCCL WARN Cuda failure|"
        # older PyTorch ("NCCL Error 2: unhandled system error"); gloo's TCP transport when a peer rank went away
        r"NCCL Error \d+|gloo/transport/tcp/pair\.cc:\d+\] (?:Connection closed by peer|Connection reset by peer|Timed out)|"
        r"NCCL communicator was aborted|Timed out initializing process group|"
        r"waiting for (?:the )?remainder of ranks for more than \d+ seconds|DistStoreError|"
        # Horovod's stall inspector (its message is often wrapped before "remainder")
        r"submitted to be reduced, gathered or broadcasted by (?:a )?subset of ranks|"
        r"Timed out after \d+ seconds waiting for clients|Rendezvous(?:Timeout|Closed|Connection)Error|"
        r"Detected mismatch between collectives|client socket has timed out|\bSocket Timeout\b|DistNetworkError|"
        r"via c10d key-value store.{0,120}got error|"
        # ProcessGroupNCCL's watchdog and heartbeat monitor (torch 2.2-2.6 wordings), gloo and monitored_barrier
        r"Timeout at NCCL work: \d+|(?:\(either an error or timeout\)|failure) detected by watchdog at work|"
        r"Heartbeat monitor timed out|Timed out waiting \d+ ?ms for (?:recv|send) operation to complete|"
        r"failed to pass monitoredBarrier|Got completion from peer \S+ with (?:error|status)|"
        # c10's native frames of the watchdog's timeout check, printed with its C++ stack (the message may be cut)
        r"ProcessGroupNCCL::WorkNCCL::checkTimeout|Exception raised from (?:ncclCommWatchdog|checkTimeout) at|"
        # NCCL's own warnings when a peer rank's connection drops (the peer died or its node went away)
        r"NCCL WARN (?:Net|NET|Call to|[Ss]ocket\w*)\b.{0,120}(?:[Cc]onnection (?:closed|reset|refused|timed out)|failed|"
        r"No route to host)",
        "NCCL collective, watchdog or rendezvous timed out",
        "a rank is stuck or much slower (uneven data, a hung dataloader, one rank skipping a collective); "
        "compare the ranks' last lines, rerun with NCCL_DEBUG=INFO, raise the timeout only once the cause is known",
    ),
    _sig(
        "dataloader_worker_killed", C,
        r"DataLoader worker \(pid(?:\(s\))?\s*[\d, ]+\) (?:is killed by signal|exited unexpectedly)|"
        r"DataLoader worker.{0,60}killed|DataLoader timed out after \d+ seconds|"
        r"Communication with the workers is no longer possible|unable to open shared memory object|"
        # torch.utils.data's worker signal handler, and a full /dev/shm when a worker hands a batch over
        r"Unexpected (?:bus error|segmentation fault) encountered in worker|unable to write to file </torch_",
        "dataloader worker killed",
        "workers are usually killed for memory: fewer workers, a smaller prefetch_factor, a larger /dev/shm "
        "(docker --shm-size), or data that is not copied into each worker",
    ),
    _sig(
        "oom_killer", C,
        r"Out of memory: Kill(?:ed)? process|Killed process \d+|\boom-kill|\boom_reaper|exit ?code:? ?-9\b|"
        r"Signals\.SIGKILL|\bSIGKILL\b|^(?:\s*(?:" + PREFIX + r"))?\s*(?:Killed|" + _KILLED_LOCALISED + r")\s*$|\bOOMKilled\b|\bexitcode\s*:\s*-9\b|\d+ oom_kill events?\b|"
        r"srun: error: \S+: tasks? [\d,-]+: (?:Out Of Memory|Killed)|"
        # DeepSpeed's launcher, subprocess, TGI's shard manager, a shell's job report, exit code 128+9
        r"return ?code\s*[=:]?\s*-9\b|non-zero exit status -9\b|signaled to shutdown with signal 9\b|"
        # DeepSpeed's launcher SIGKILLing the other workers once one has died (its return code may come later, or not)
        r"sigkill_handler\] Killing subprocess \d+|"
        r"\bline \d+:\s+\d+ Killed\s|^\[\d+\][+-]?\s+Killed\s|^zsh: killed\s|"
        # the shell's "Killed" glued to the last line the program printed without a newline (a progress bar)
        r"(?<=[\d\]%|])Killed\s*$|"
        r"\b(?:[Ee]xit(?:ed with)? ?[Cc]ode|exit_code)\s*[=:]?\s*137\b|"
        r"TERM_MEMLIMIT|killed due to memory pressure",
        "process killed (SIGKILL, usually the host OOM killer)",
        "the host ran out of RAM: check `dmesg` for the OOM killer, reduce host memory use (workers, "
        "pinned buffers, CPU offload) or request more memory",
    ),
    _sig(
        "cuda_error", C,
        r"illegal memory access|CUDA error: (?!out of memory)|device-side assert|cudaErrorIllegalAddress|"
        r"cuda runtime error \(\d+\) : |CUDNN_STATUS_(?:NOT_INITIALIZED|MAPPING_ERROR|ARCH_MISMATCH)|"
        # TensorFlow when cuDNN or cuBLAS cannot start (often the GPU's memory already taken)
        r"cuDNN failed to initialize|Blas x?GEMM launch failed|"
        r"CUBLAS_STATUS_(?:EXECUTION_FAILED|NOT_INITIALIZED|INTERNAL_ERROR|ARCH_MISMATCH)|"
        r"CUDNN_STATUS_(?:EXECUTION_FAILED|INTERNAL_ERROR)|unspecified launch failure|CUDA driver initialization failed|"
        r"uncorrectable ECC error|CUDA kernel errors might be asynchronously reported|cuDNN error|"
        r"fallen off the bus|\bNVRM: Xid\b|CUDA driver version is insufficient|no CUDA-capable device is detected|"
        r"cudaError(?:NoDevice|InsufficientDriver|LaunchFailure|IllegalInstruction|MisalignedAddress|Assert|"
        r"ECCUncorrectable|LaunchTimeout|HardwareStackError|InvalidDeviceFunction|NoKernelImageForDevice)|"
        r"CUDA_ERROR_(?:ILLEGAL_ADDRESS|ILLEGAL_INSTRUCTION|LAUNCH_FAILED|ECC_UNCORRECTABLE|ASSERT|MISALIGNED_ADDRESS|"
        r"HARDWARE_STACK_ERROR|NO_DEVICE|NO_BINARY_FOR_GPU|LAUNCH_TIMEOUT|INVALID_CONTEXT|CONTEXT_IS_DESTROYED|INVALID_DEVICE|"
        r"NOT_INITIALIZED|DEINITIALIZED|SYSTEM_DRIVER_MISMATCH|SYSTEM_NOT_READY|INVALID_PTX|UNSUPPORTED_PTX_VERSION|"
        r"INVALID_HANDLE|PEER_ACCESS_UNSUPPORTED|COMPAT_NOT_SUPPORTED_ON_DEVICE|UNKNOWN)\b|"
        r"couldn't communicate with the NVIDIA driver|Unable to determine the device handle for GPU|"
        r"Failed to (?:query|initialize) NVML|NVMLError|NVML_ERROR_\w+",
        "CUDA error",
        "rerun with CUDA_LAUNCH_BLOCKING=1 to find the failing kernel; check indices/labels against the "
        "vocabulary size, then the driver and the GPU's ECC/Xid status",
    ),
    _sig(
        "crash_signal", C,
        r"Signal: (?:Bus error|Segmentation fault)|[Ss]egmentation fault|\bSignal \((?:6|7|11)\) received|\bSIGSEGV\b|\bSIGBUS\b|[Bb]us error|"
        r"Fatal Python error|core dumped|terminate called after throwing an instance of|\bSIGABRT\b|"
        # PyTorch's std::terminate handler (an uncaught C++ exception; Windows prints no "terminate called")
        r"Unhandled exception caught in c10/util/AbortHandler\.h|"
        # torchrun / DeepSpeed's launcher reporting a worker that died on SIGABRT, SIGBUS or SIGSEGV; glibc's heap checks
        r"(?:\bexit ?code|\bexitcode|return ?code)\s*[=:]?\s*-(?:6|7|11)\b|double free or corruption|"
        r"free\(\): invalid (?:pointer|size|next size)|malloc\(\): (?:corrupted|memory corruption|invalid)|"
        r"corrupted size vs\. prev_size|"
        # a failed assertion in native code aborts the process (C's assert, ggml's GGML_ASSERT in llama.cpp servers)
        r"Assertion `.{1,200}' failed|GGML_ASSERT\(.{1,200}\) failed|GGML_ASSERT: \S+:\d+: |\[TensorRT-LLM\]\[ERROR\] Assertion failed:|"
        # ggml's abort handler printing its backtrace (a llama.cpp server's native crash: the frames follow it)
        r"\bggml_abort\b|"
        # the first frame of a native stack trace dumped on a fatal signal (boost::stacktrace: Triton, TensorRT-LLM)
        r"^\s*0# (?:0x[0-9A-Fa-f]{6,} in |\S+ in /)|"
        # Go's runtime crash dump (a panic, a fatal error or signal in a Go server such as Ollama): its goroutine header,
        # and frames with their frame, stack and program counters, which only a crash prints
        r"\bgoroutine \d+ \[running\]:|\.(?:go|s):\d+ \+0x[0-9a-f]+ fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x[0-9a-f]+|"
        # a shell's, make's or docker's exit status of 128 + the signal: 134 SIGABRT, 135 SIGBUS, 139 SIGSEGV
        r"\] Error (?:134|135|139)\b|\bexit(?:ed)? (?:with )?(?:code|status)\s*[=:(]?\s*(?:134|135|139)\b|\bExited \((?:134|135|139)\)|"
        # glog's CHECK failing (TensorFlow, TF Serving, Caffe, MXNet: the process aborts next), and a shell's report of
        # a child that died on SIGABRT ("entrypoint.sh: line 3:     8 Aborted    tensorflow_model_server ...")
        r"\.(?:cc|cpp|cu|h):\d+\] Check failed: |: line \d+:\s+\d+ Aborted\b",
        "process crashed on a signal",
        "a native library crashed: SIGBUS often means /dev/shm is too small; otherwise collect the core dump "
        "or faulthandler output and match library versions",
    ),
    _sig(
        "nonfinite_message", E,
        r"detected (?:nan|inf|nan/inf)|\bfound (?:nan|inf)\b|nan or inf found|invalid loss, terminating|"
        r"\binput contains nan\b|"  # scikit-learn's check on predictions or features (a metric computed on NaN outputs)
        r"(?:loss|grad(?:ient)?s?)\s+(?:is|are|become|became|becomes|has become|contains?)\s+"
        r"(?:nan|inf(?:inite|inity)?|non-?finite|not finite)\b|returned in `training_step` is (?:nan|[-+]?inf)|"
        r"probability tensor contains either .inf., .nan.|"
        r"non-?finite (?:loss|grad)|\bFloatingPointError\b|\bnan loss|\bnan detected|returned nan values|"
        r"tensor had (?:nan|inf) values|=\s*(?:nan|[-+]?inf)\s+is not finite|"
        r"(?:\b|_)(?:loss|grad(?:ient)?[ _]norm|gnorm)\b\W{0,20}(?:tensor\(\[?)?(?:nan|[-+]?inf)\b|"
        r"grad(?:ient)?[ _]norm (?:is|was|became) (?:nan|[-+]?inf)\b|\bnan encountered in (?:the )?(?:loss|grad)|"
        # a custom loop's own words: "loss exploded to inf", "train loss went to NaN", "gradients blew up to inf"
        r"\b(?:loss|grad(?:ient)?s?(?:[ _]norm)?)\b (?:\w+ )?(?:exploded|diverged|went|jumped|blew up|goes|shot up) "
        r"to (?:nan|[-+]?inf(?:inity)?)\b|"
        # a loop that stops itself on a blow-up: "Aborting, cost seems to be exploding" (neuraltalk and its copies)
        r"\b(?:loss|cost)\b (?:seems to be|appears to be|is) exploding\b",
        "NaN/Inf in the loss or gradients",
        "lower the learning rate or add warm-up, clip gradients, use bf16 instead of fp16, and check the data "
        "batch at that step for bad values",
        re.IGNORECASE,
    ),
    _sig(
        # Caffe's SoftmaxWithLoss clamps the true class's probability at FLT_MIN: a loss of -ln(FLT_MIN) = 87.3365
        # means the softmax gave it nothing at all (its most reported failure)
        "softmax_saturated", E,
        r"\bloss\b[^=:\n]{0,40}[=:]\s*87\.336[45]\d*(?![\d.])",
        "loss saturated at -ln(FLT_MIN) = 87.3365: the softmax gives the true class zero probability",
        "the logits blew up or the labels are out of range: check that labels lie in [0, classes) (and the "
        "ignore label), lower the learning rate, add normalisation layers or initialise from a trained model",
    ),
    _sig(
        "model_load_failure", C,
        r"Error when initializing model|Load model failed|(?i:fail(?:ed|ure)? to (?:load|locate) (?:the )?model)|Error loading model|"
        r"(?i:could(?: not|n.t) load (?:the )?model)|unable to create TensorRT engine|"
        r"Could not (?:start|create) (?:a suitable |the |\w+ )?backend|failed to poll model|model not found in any model repository|UNAVAILABLE: Internal|"
        r"exception occurred while instantiating runner|MissingDependencyException|failed to load '[^']+' version|"
        r"ShardCannotStart|Shard \d+ failed to start|Error: (?:DownloadError|WebserverFailed|ShardFailed)|"
        r"larger than the maximum number of tokens that can be stored in KV cache|(?i:error loading model)|"
        r"unable to load model|Loading servable: .{0,120}\bfailed|Error\(s\) in loading state_dict|"
        r"Unable to load weights from|PytorchStreamReader failed reading|"
        # vLLM's engine start-up, transformers' loaders, Triton's start-up, Ray Serve's replica constructor
        r"Engine core initialization failed|EngineCore failed to start|Engine process failed to start|"
        r"does not recognize this architecture|Model architectures \[[^\]]*\] (?:are not supported|failed to be inspected)|"
        r"Can't load (?:the )?(?:tokenizer|model|config(?:uration)?|weights|processor|feature extractor)\b|"
        r"is not a valid model identifier|failed to load all models|failed to start \d+ times in a row|"
        r"\[ERROR\] Exception in worker process|Worker failed to boot|"  # gunicorn: the app (the model server) did not start
        # the weights never arrived: a failed download (the Hub, NGC's model API)
        r"(?i:(?:failed|unable|error) (?:to |while |when )?download(?:ing)? (?:the )?model)|"
        r"We couldn't connect to 'https://huggingface\.co' to load|error sending request for url \(https?://\S*/models?/|"
        # OpenVINO Model Server and other compiling runtimes: the model does not compile for the target device
        r"(?i:(?:cannot|can't|could not|failed to|unable to) compile (?:the )?model)|(?i:error occurred while loading model)|"
        # TensorFlow's SavedModel loader (TF Serving logs it at INFO, then the servable never becomes available)
        r"SavedModel load for tags \{[^}]*\}; Status: fail",
        "model failed to load",
        "check the model path, its files and format, the dependencies the runner imports, and that it fits in "
        "GPU memory with the configured parallelism",
    ),
    _sig(
        "engine_dead", C,
        r"EngineDeadError|Engine loop is not running|EngineCore encountered an issue|"
        r"backend worker process died|[Ww]orker died|worker process died|RayActorError|died unexpectedly|"
        r"The actor (?:is dead|died\b)|CrashLoopBackOff|Back-off restarting failed container|WORKER TIMEOUT|"
        r"llama runner process has terminated|Worker disconnected\. WORKER_|Stub process '[^']+' is not healthy|"
        # vLLM's MQ engine, SGLang's scheduler and launcher, Ray Serve's health checks, TorchServe, TGI's router
        r"Engine loop has died|\bhit an exception\b|Received sigquit from a child process|WorkerCrashedError|"
        r"failed health check|\bUNHEALTHY\b|\(unhealthy\)|Backend worker error|"
        r"Backend worker did not respond in given time|Webserver Crashed|the replica will be stopped|"
        r"Engine background task failed|server crash \d+ - exit code|"  # vLLM's async engine when its loop raised; Ollama respawning its runner
        # vLLM's API server once its engine process is gone, TGI's launcher losing a shard, llama.cpp's server loop
        r"Engine is already dead\b|\bShard \d+ crashed\b|unexpected error in llama server|update_slots - exiting main loop|"
        # a supervisor finding its child gone and starting it again (a GPUStack worker's RPC server), supervisord
        # giving up on a program that keeps exiting
        r"\bis not running\b[^\n]{0,80}\brestarting\b|entered FATAL state, too many start retries",
        "serving engine or worker died",
        "look for the root cause just above (often GPU out of memory); restart policy and health checks "
        "keep the endpoint up meanwhile",
    ),
    _sig(
        "rust_panic", E,
        # Rust's panic message (text-embeddings-inference, text-generation-inference's router and launcher, the
        # tokenizers and safetensors libraries), and what PyO3 raises in Python for it
        r"\bthread '[^'\n]{0,80}' panicked at\b|\bpyo3_runtime\.PanicException\b",
        "a Rust component panicked",
        "the panicking thread's work is lost, and a server usually stops answering or exits: read the message and "
        "the source location after 'panicked at' (a known bug of that version, an input it cannot handle), then restart",
    ),
    _sig(
        "watchdog_timeout", C,
        # an engine's own watchdog (SGLang's scheduler: no forward step for watchdog_timeout s); NCCL's is nccl_timeout
        r"\bWatchdog timeout\b",
        "a watchdog saw no progress: the engine or training step is hung",
        "a hung step: one request or rank stuck in a kernel, a collective or a deadlock; the lines just before "
        "it name the last work done (py-spy dump the process before it is killed)",
    ),
    _sig(
        "kv_cache_exhausted", W,
        # SGLang retracting decode requests, vLLM pre-empting sequence groups for want of KV-cache blocks
        r"Decode out of memory happened|not enough KV cache space|preempted by PreemptionMode\.|"
        r"#retracted_reqs:\s*[1-9]|"
        # llama.cpp's server (and Ollama's runner) halving its batch for want of KV-cache cells
        r"failed to find free space in the KV cache",
        "KV cache exhausted: requests retracted or pre-empted",
        "the server runs out of KV-cache space, so requests are pre-empted and recomputed and latency jumps: lower "
        "the concurrent requests (max_num_seqs / max-running-requests) or max tokens, raise the KV memory "
        "fraction, or add replicas",
    ),
    _sig(
        "checkpoint_save_failure", C,
        r"PytorchStreamWriter failed writing|(?:failed|unable|error) (?:to |while |when )?(?:sav|writ)\w* "
        r"(?:the |a )?checkpoint|checkpoint\S* (?:save |saving |write )?(?:failed|error)|"
        r"inline_container\.cc:\d+\] \. unexpected pos|Parent directory \S+ does not exist|"
        # safetensors' writer (a full disk is disk_full, above) and transformers refusing tied weights at save time
        r"SafetensorError: Error while serializing|Some tensors share memory, this will lead to duplicate memory on disk|"
        r"write error: wrote \d+ blocks instead of \d+|"  # (Lua) Torch's file writer: a short write, usually a full disk
        r"FileStream\.Write incomplete",  # MXNet's (dmlc) file stream: the same short write of a checkpoint
        "checkpoint save failed",
        "check free space and quota on the checkpoint volume and that every rank can write there; "
        "save to local disk and copy asynchronously on flaky network filesystems",
        re.IGNORECASE,
    ),
    _sig(
        "job_cancelled", C,
        r"\*\*\* (?:JOB|STEP) \S+ (?:ON \S+ )?CANCELLED AT|DUE TO (?:TIME LIMIT|PREEMPTION|NODE FAIL)|"
        r"Received (?:Signals\.SIGTERM|15) death signal|PBS: job killed: walltime \d+ exceeded limit|"
        r"TERM_(?:RUNLIMIT|PREEMPT|DEADLINE)",
        "job cancelled by the scheduler (time limit, preemption or node failure)",
        "resume from the last checkpoint; for a time limit request more time or checkpoint more often, for "
        "preemption requeue the job and save a checkpoint when SIGTERM arrives",
    ),
    _sig(
        "http_5xx", W,
        r"\"\s*[A-Z]+ \S+ HTTP/[\d.]+\"\s+5\d\d\b|(?:\b|_)status[=: ]+5\d\d\b|\bHTTP/[\d.]+\s+5\d\d\b|"
        r"\bstatus(?:_?[Cc]ode)?\"?\s*[=:]\s*\"?5\d\d\b|(?i:\bresponse[ _]?code)\"?\s*[=:]\s*\"?5\d\d\b|\[GIN\][^|]{0,40}\|\s*5\d\d\s*\||Error code: 5\d\d\b|"
        # the server's own log of a request that raised (uvicorn, gunicorn/aiohttp, Flask): the client got a 500
        r"Exception in ASGI application|Error handling request|ERROR in app: Exception on |Exception on /\S* \[[A-Z]+\]|"
        r"Internal Server Error|Service Unavailable|Bad Gateway|Gateway Time-?out|upstream timed out|"
        r"upstream prematurely closed connection|while connecting to upstream|no live upstreams|"
        # Envoy (Istio, KServe, Knative gateways): its 503 bodies when the model server is down or not ready
        r"upstream connect error or disconnect/reset before headers|\bno healthy upstream\b|"
        # a llama.cpp server answering a request with an error (its decode failed, the prompt was refused...)
        r"\bsend_error: task id = \d+, error:|"
        # Ray Serve's request log ("GET / 500 12.3ms", "POST /predict ERROR 3.1ms", a handle call's "__CALL__ ERROR 3.1ms")
        r"\b(?:GET|POST|PUT|PATCH|DELETE) /\S* (?:5\d\d|ERROR) \d+(?:\.\d+)?ms\b|\b__CALL__ ERROR \d+(?:\.\d+)?ms\b",
        "server answered with 5xx",
        "the server's error log right after the request names the exception; 503 means not ready or "
        "overloaded (check readiness, queue limits and replicas)",
    ),
    _sig(
        "request_timeout", W,
        # Ray Serve's request log of a request cancelled after 10 s or more (the client's timeout: "GET / CANCELLED
        # 60001.2ms"); gRPC's status for a call past its deadline; the OpenAI client's timeout
        r"\b(?:GET|POST|PUT|PATCH|DELETE) /\S* CANCELLED \d{5,}(?:\.\d+)?ms\b|\bDEADLINE_EXCEEDED\b|"
        r"\b[Dd]eadline [Ee]xceeded\b|\bAPITimeoutError\b|\bRequest timed out\b",
        "requests timing out",
        "the server takes longer than the client waits: a stuck replica or engine (its log names the last request "
        "it served), a queue longer than it can drain (add replicas, lower max ongoing requests), or a client "
        "timeout shorter than the model's longest answers",
    ),
    _sig(
        "startup_stall", W,
        r"taken more than \d+s to (?:start up|be scheduled|initialize)|pending for more than|"
        r"waiting for (?:resources|a free|available)|[Tt]imed out waiting for (?:the )?[\w-]+(?: [\w-]+)? to (?:be(?:come)? ready|start)|(?:Readiness|Liveness|Startup) probe failed|"
        r"\bFailedScheduling\b|\d+/\d+ nodes are available:.{0,200}Insufficient|ImagePullBackOff|ErrImagePull",
        "replicas or workers stuck starting",
        "the cluster lacks the requested resources (GPUs, memory) or the image/model download is slow",
    ),
)

# Every branch of a signature's pattern contains one of its words (lower-cased): the pattern only runs
# on lines holding one, so a line no signature can match costs a few substring tests.
_KEYS = {
    "cuda_oom": ("out of memory", "outofmemory", "cudaerrormemoryallocation", "cublas_status_alloc", "resource_exhausted",
                 "oom when allocating", "no available memory for the cache", "cuda_error_out_of_memory",
                 "allocating device buffer", "mem-fraction-static", "failed to allocate memory", "prefill tokens",
                 "cudnn_status_alloc", "of memory while trying to allocate", "insufficient gpu", "insufficient free gpu", "insufficient device",
                 "insufficient cuda", "not enough gpu", "not enough free gpu", "not enough device", "not enough cuda"),
    "cpu_oom": ("defaultcpuallocator", "memoryerror", "cannot allocate memory", "bad_alloc", "unable to allocate",
                "ray.exceptions.outofmemoryerror", "rayoutofmemoryerror", "running low on memory", "oom when allocating"),
    "disk_full": ("no space left", "enospc", "errno 28", "disk quota", "edquot"),
    "nccl_timeout": ("watchdog", "before timing out", "nccl", "timed out initializing process group",
                     "remainder of ranks", "subset of ranks", "diststoreerror", "waiting for clients", "rendezvous",
                     "mismatch between collectives", "socket has timed out", "socket timeout", "distnetworkerror",
                     "c10d key-value store", "heartbeat monitor", "operation to complete", "monitoredbarrier",
                     "completion from peer", "gloo/transport"),
    "dataloader_worker_killed": ("dataloader worker", "dataloader timed out", "communication with the workers",
                                 "shared memory object", "encountered in worker", "unable to write to file"),
    "oom_killer": ("已杀死", "強制終了", "getötet", "убито", "out of memory: kill", "killed process", "oom-kill", "oom_reaper", "exit code", "exitcode", "sigkill", "killing subprocess",
                   "killed", "oomkilled", "oom_kill event", "srun: error", "return code", "returncode", "exit status -9",
                   "signaled to shutdown", "exited with code", "exit_code", "term_memlimit", "memory pressure"),
    "cuda_error": ("illegal memory access", "cuda error", "cuda runtime error", "device-side assert", "cudnn failed",
                   "gemm launch failed", "cudaerrorillegaladdress",
                   "cublas_status_execution", "cublas_status_not_initialized", "cublas_status_internal",
                   "cublas_status_arch", "cuda driver initialization", "cudnn_status", "unspecified launch failure", "ecc error", "cuda kernel errors",
                   "cudnn error", "fallen off the bus", "nvrm: xid", "cuda driver version", "cuda-capable device",
                   "cudaerror", "cuda_error_", "nvidia driver", "device handle for gpu", "nvml"),
    "crash_signal": ("ggml_abort", "signal:", "segmentation fault", "sigsegv", "sigbus", "bus error", "fatal python error", "core dumped",
                     "terminate called", "sigabrt", "exit code", "exitcode", "return code", "returncode", "double free",
                     "free(): invalid", "malloc(): ", "corrupted size", "assertion `", "ggml_assert(", "ggml_assert: ", "signal (",
                     "[error] assertion failed", "0# ", "] error 13", "exited with", "exit status", "exited (",
                     "goroutine ", " fp=0x", "aborthandler", "check failed", " aborted"),
    "rust_panic": ("panicked at", "panicexception"),
    "softmax_saturated": ("87.336",),
    "nonfinite_message": ("nan", "inf", "finite", "floatingpointerror", "invalid loss", "exploding"),
    "model_load_failure": ("initializing model", "load model", "load the model", "loading model", "tensorrt engine",
                           "unavailable: internal", "instantiating runner", "missingdependency", "failed to load '",
                           "shardcannotstart", "failed to start", "downloaderror", "webserverfailed", "stored in kv cache",
                           "unable to load model", "loading servable", "loading state_dict", "unable to load weights",
                           "pytorchstreamreader", "engine core initialization", "enginecore failed to start",
                           "engine process failed to start", "recognize this architecture", "model architectures", "poll model",
                           "model repository", "could not load model", "couldn't load model", "couldn't load the model", "could not load the model", "locate model", "locate the model", "could not start", "could not create",
                           "can't load", "model identifier", "failed to load all", "times in a row", "shardfailed",
                           "exception in worker process", "worker failed to boot", "compile model", "compile the model", "download model", "downloading model",
                           "download the model", "downloading the model", "couldn't connect to 'https://huggingface.co",
                           "error sending request for url",
                           "while loading model", "status: fail"),
    "engine_dead": ("enginedead", "engine loop", "enginecore encountered", "worker process died", "worker died",
                    "rayactorerror", "actor died", "actor is dead", "crashloopbackoff", "back-off restarting",
                    "worker timeout", "runner process has terminated", "worker disconnected", "is not healthy",
                    "died unexpectedly", "hit an exception", "sigquit from a child", "workercrashederror",
                    "failed health check", "unhealthy", "backend worker error", "backend worker did not respond",
                    "replica will be stopped", "engine background task failed", "server crash",
                    "already dead", "crashed", "unexpected error in llama server", "exiting main loop",
                    "is not running", "too many start retries"),
    "watchdog_timeout": ("watchdog timeout",),
    "kv_cache_exhausted": ("decode out of memory", "kv cache space", "preemptionmode", "#retracted_reqs",
                           "free space in the kv cache"),
    "checkpoint_save_failure": ("streamwriter", "checkpoint", "unexpected pos", "parent directory", "error while serializing",
                                "tensors share memory", "write error: wrote", "filestream.write incomplete"),
    "job_cancelled": ("cancelled at", "due to time limit", "due to preemption", "due to node fail", "sigterm death signal",
                      "15 death signal",
                      "walltime", "term_runlimit", "term_preempt", "term_deadline"),
    "http_5xx": ("send_error", "http/", "status", "internal server error", "service unavailable", "bad gateway", "gateway time",
                 "upstream timed out", "prematurely closed", "connecting to upstream", "no live upstreams", "[gin]",
                 "error code: 5", "exception in asgi", "error handling request", "exception on ",
                 "upstream connect error", "no healthy upstream", "response code", "response_code", "responsecode",
                 "get /", "post /", "put /", "patch /", "delete /", "__call__ error"),
    "request_timeout": ("cancelled", "deadline_exceeded", "deadline exceeded", "apitimeouterror", "request timed out"),
    "startup_stall": ("to start up", "taken more than", "pending for more than", "waiting for", "probe failed",
                      "failedscheduling", "nodes are available", "pullbackoff", "errimagepull"),
}
SIGNATURES = tuple(replace(s, keys=_KEYS[s.name]) for s in SIGNATURES)
_BY_NAME = {s.name: s for s in SIGNATURES}
# Megatron-LM's iteration line counts the iterations of the interval whose loss was NaN (and left out of the
# average it prints): a count above 0 is a NaN loss the printed values do not show.
_NAN_ITERATIONS = re.compile(r"number of nan iterations:\s*([1-9]\d*)\b")


def _any_of(words: Iterable[str]) -> re.Pattern:
    """One pattern matching wherever any of ``words`` occurs, written as a trie (``c(?:uda|udnn)``): at each
    position the regex engine tests one character against a few instead of trying every word, about half the cost
    of a ``word in line`` loop over a hundred words (and far less than a plain ``a|b|c`` alternation).

    >>> _any_of(["cudnn", "cuda", "nan"]).pattern
    '(?:cud(?:a|nn)|nan)'
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def branch(node: dict) -> str:
        if "" in node:
            return ""  # a word ends here: the longer ones add nothing to "does any occur"
        alts = [re.escape(ch) + branch(child) for ch, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return re.compile(branch(trie))


_SCREEN = _any_of(sorted({k for keys in _KEYS.values() for k in keys} - {"inf"}))


def _screen(low: str) -> bool:
    """Whether a lower-cased line holds any signature's word ("inf" not counting inside "info" or "infer")."""
    if _SCREEN.search(low) is not None:
        return True
    return "inf" in low and "inf" in low.replace("info", "").replace("infer", "")
TRACEBACK = Signature(
    "python_exception", E, re.compile(r"Traceback \(most recent call last\):"), "Python exception",
    "read the exception at the end of the traceback and the frame above it that belongs to your code",
)
ERROR_LINE = Signature(
    "error_line", W, re.compile(
        r"\b(?:ERROR|FATAL|CRITICAL)\b|\[E\d{0,4} |^[EF]\d{4} \d\d:|\"level\":\s*\"(?:error|fatal)\"|"
        # spdlog's and nginx's bracketed levels ("[modelmanager][error]", "[error] 12#0:"), logrus's "level=error"
        r"\[(?:error|critical|crit|fatal|alert|emerg)\]|\blevel=\"?(?:error|fatal)\b"
    ),
    "error-level log line", "the line says what failed; look at the lines around it",
)
_OVERFLOW = re.compile(
    r"(?:OVERFLOW!|Overflow detected\. Skipping step\.).{0,40}?Attempted loss scale: (?P<from>\S+?),? "
    r"(?:reducing to (?P<to>[-+\deE.]+)|but hysteresis)|"
    r"Gradient overflow\.\s+Skipping step, loss scaler \d+ reducing loss scale to (?P<apex>[-+\deE.]+)|"
    r"overflow detected, (?:ignoring gradient, )?setting (?:loss )?scale to:? (?:to )?(?P<fs>[-+\deE.]+)|"
    r"decreased lg_loss_scale to (?P<lg>[-+\deE.]+)|"
    # apex amp's scaler before it printed the scale; Paddle's AMP GradScaler ("decrease to: 1024.0*0.5")
    r"Gradient overflow, skipping update|"
    # MindSpore's dynamic loss scale (MindYOLO: "overflow, still update, loss scale adjust to 1024.0")
    r"overflow, (?:still update, )?loss scale adjust to (?P<ms>[-+\deE.]+)|"
    r"Found inf or nan, current scale is:? \S+?,? decrease to:? (?P<pd>[-+\deE.]+)\*(?P<pdr>[-+\deE.]+)",
    re.IGNORECASE,
)
_OVERFLOW_ABORT = re.compile(
    r"loss scale already at minimum|Minimum loss scale reached|Skipped \d+ iterations in a row due to Overflow|"
    r"loss scale (?:has )?(?:reached|hit) (?:the )?minimum|"
    r"grad_scale is too small",  # icefall (k2) ends the run when its AMP scale collapsed
    re.IGNORECASE,
)
# TensorFlow's glog-style INFO record ("2021-05-09 18:30:53.337423: I tensorflow/stream_executor/...")
_TF_INFO_RECORD = re.compile(r"\d\d:\d\d:\d\d\.\d+: i (?:tensorflow|external/)")
# icefall (k2) warns while its AMP grad scale is tiny: the scale itself, as an overflow message would give it
_SMALL_GRAD_SCALE = re.compile(r"[Gg]rad scale is small: ([-+\deE.]+)")
FP16 = Signature(
    "fp16_overflow", W, _OVERFLOW, "fp16 overflow: steps skipped, loss scale falling",
    "a few overflows at the start are normal; a scale that keeps falling means the loss or gradients blow up: "
    "lower the learning rate, clip gradients, or train in bf16",
)
_CHECKPOINT_START = re.compile(r"[Ss]aving (?:the )?(?:model )?checkpoint|save_checkpoint|Saving model", re.IGNORECASE)
_CHECKPOINT_FRAME = re.compile(r"in (?:_?save_checkpoint|_save|save|save_model|save_pretrained|_save_to_state_dict)\b")
_CHECKPOINT_PATH = re.compile(r"serialization\.py|checkpoint", re.IGNORECASE)
_TB_START = re.compile(r"Traceback \(most recent call last\):")
_TB_CHAIN = re.compile(r"During handling of the above exception|The above exception was the direct cause")
# A traceback's frame line ('  File "x.py", line 12, in main'), matched where 'File "' occurs (no search over the
# indentation before it, which a long run of spaces would make quadratic)
_FRAME = re.compile(r'File "[^"\n]*", line \d+, in ')
# An uncaught exception's line on its own: ``RuntimeError: ...``, ``torch.distributed.DistBackendError: ...``,
# also behind a launcher's prefix (``[rank0]: ValueError: ...``, ``node-1: KeyError: 'x'``). In 32,000 loghub
# lines, the github text logs and the healthy dev fragments no line has this shape; warnings and "Exception
# ignored in" do not.
_UNCAUGHT = re.compile(r"^\s*(?:" + PREFIX + r")?(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s|:?\s*$)")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure|Fault)\b|^[A-Za-z_][\w.]*: ")


class SignatureConfig(DiagnosticConfig):
    """Thresholds of the stateful signatures.

    Parameters
    ----------
    warn_scale
        An overflow that leaves the loss scale at or below this is a WARNING.
    min_scale
        A loss scale below this (or the framework's own "at minimum") is CRITICAL.
    overflow_streak
        This many overflow messages, each within ``overflow_gap`` lines of the previous, are a WARNING.
    http_errors
        This many 5xx responses within ``http_window`` lines escalate to ERROR.
    error_lines
        Raise generic ERROR/FATAL level lines (``error_line``); off, only known signatures fire.
    max_evidence
        Lines kept as a finding's evidence (the first ones and the last ones).
    """

    warn_scale: float = 8.0
    min_scale: float = 1.0
    overflow_streak: int = Field(default=8, ge=2)
    overflow_gap: int = Field(default=50, ge=1)
    http_errors: int = Field(default=5, ge=2)
    http_window: int = Field(default=100, ge=1)
    error_lines: bool = True
    max_evidence: int = Field(default=16, ge=2)
    max_traceback_lines: int = Field(default=400, ge=10)


@dataclass(slots=True)
class LogFinding:
    """A signature firing: which one, how urgent, the lines behind it.

    ``line`` is the index (in the run's line stream) of the first offending line.
    """

    signature: str
    severity: Severity
    line: int
    lines: list[str]
    message: str
    title: str
    hint: str
    value: float = math.nan  # a number the signature read (the loss scale), when there is one
    held: bool = False  # reported lines after ``line`` (a traceback or error banner): dated at ``line``, not at the report


@dataclass(slots=True)
class _Traceback:
    start: int
    lines: list[str] = field(default_factory=list)
    exception: str = ""
    reported: str = ""  # signature already reported for this traceback (a batch ended inside it)
    frames: int = 0
    last_file: bool = False


def classify(text: str) -> Signature | None:
    """The most specific signature whose pattern ``text`` matches, or None.

    >>> classify("OSError: [Errno 28] No space left on device").name
    'disk_full'
    """
    if _OVERFLOW_ABORT.search(text):
        return FP16  # fairseq raises FloatingPointError("Minimum loss scale reached ..."): the scaler gave up
    for sig in SIGNATURES:
        if sig.pattern.search(text):
            return sig
    return None


def _strip_prefix(line: str, prefix: str) -> str:
    if prefix and line.startswith(prefix):
        return line[len(prefix) :]
    return line


class SignatureMatcher:
    """Known failure signatures over one run's lines, with the grouping described in the module docstring."""

    def __init__(self, config: SignatureConfig | None = None) -> None:
        self.config = config or SignatureConfig()
        self.index = -1  # index of the last line fed
        self._tb: _Traceback | None = None
        self._tb_prefix = ""
        self._banner: tuple[int, str] | None = None  # an error line that may open a traceback
        self._checkpoint_at = -(10**9)  # last "saving checkpoint" line
        self._overflow: list = []  # [first line, last line, count, lines]
        self._overflow_severity = 0
        self._scale = math.nan  # the loss scale as last told (an overflow message or an iteration line)
        self._settled = False  # an iteration line told the scale with no overflow: the fp16 warm-up is over
        self.claimed = False  # whether a signature took the last line fed (a finding, or held for one)
        self._http: deque[int] = deque()
        self._http_escalated = False

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, line: str, extracted: bool = False) -> list[LogFinding]:
        """One line; ``extracted`` says metric values were read from it (NaN messages are then theirs).

        Afterwards :attr:`claimed` says whether a signature took the line: it raised a finding, or it is held
        for one (a traceback's line, an error banner, an overflow of a streak already reported).
        """
        self.index += 1
        out: list[LogFinding] = []
        self.claimed = self._take(line, extracted, out)
        return out

    def _take(self, line: str, extracted: bool, out: list[LogFinding]) -> bool:
        """Match one line, adding its findings to ``out``; whether a signature took it."""
        if self._tb is not None:
            # A line the metric reader took values from (a training loop's next iteration line) is past the traceback.
            if not extracted and self._continue_traceback(line):
                return True
            out.extend(self._close_traceback())
        at = line.find("Traceback (most recent call last):")
        if at >= 0:
            banner, self._banner = self._banner, None
            self._open_traceback(line, at, banner)
            return True
        at = line.find('File "')
        if at >= 0 and _FRAME.match(line, at):
            # A traceback whose header was not printed or not pasted (a log cut mid-traceback, a logger that
            # prints frames only): frames belong to nothing else, so they open one.
            banner, self._banner = self._banner, None
            self._open_traceback(line, len(line[:at].rstrip(" \t")), banner)
            self._tb.frames, self._tb.last_file = 1, True
            return True
        if self._banner is not None:
            out.extend(self._release_banner())
        low = line.lower()
        if ("checkpoint" in low or "saving model" in low) and _CHECKPOINT_START.search(line):
            self._checkpoint_at = self.index
        if ("overflow" in low or "lg_loss_scale" in low or "current scale is" in low) and _OVERFLOW.search(line):
            out.extend(self._overflow_line(line))
            return True
        if "grad scale is small" in low and (m := _SMALL_GRAD_SCALE.search(line)) is not None:
            out.extend(self._overflow_report(line, _float(m.group(1))))  # a scale below 1 is CRITICAL there
            return True
        if ("minimum" in low or "in a row" in low or "too small" in low) and _OVERFLOW_ABORT.search(line):
            out.append(self._finding(FP16, Severity.CRITICAL, self.index, [line], line))
            return True
        if "nan iterations" in low and _NAN_ITERATIONS.search(line):
            out.append(self._finding(_BY_NAME["nonfinite_message"], Severity.ERROR, self.index, [line], line))
            return True
        # "inf" (a key of nonfinite_message) is in every INFO line: the keys are looked up without "info"/"infer",
        # as the screen does, so NaN/Inf's pattern runs on a tenth of the screened lines instead of most of them
        screened = _screen(low)
        keyed = low.replace("info", "").replace("infer", "") if screened and "inf" in low else low
        for sig in SIGNATURES if screened else ():
            if any(k in keyed for k in sig.keys) and sig.pattern.search(line):
                if sig.name == "nonfinite_message" and extracted:
                    continue  # its values went to the metric detectors
                if sig.name == "http_5xx":
                    out.extend(self._http_line(line))
                else:
                    out.append(self._finding(sig, self._severity(sig, low), self.index, [line], line))
                return True
        if ("Error" in line or "Exception" in line) and _UNCAUGHT.match(line):
            # The last line of a traceback whose frames were not printed (or not pasted): the exception itself.
            out.append(self._finding(TRACEBACK, Severity.ERROR, self.index, [line], line.strip()))
            return True
        if self.config.error_lines and is_error_record(line):
            self._banner = (self.index, line)  # held one line: it may open a traceback
            return True
        return False

    @staticmethod
    def _severity(sig: Signature, low: str) -> Severity:
        # torch.distributed.elastic retries a missed rendezvous keep-alive and logs it as a warning: the job goes on
        if sig.name == "nccl_timeout" and "keep-alive heartbeat" in low:
            return Severity.WARNING
        # TensorFlow's allocator logs a failed device allocation at INFO and retries smaller: no failure of its own
        # (a real OOM follows as "OOM when allocating tensor" / ResourceExhaustedError)
        if sig.name == "cuda_oom" and "failed to allocate" in low and _TF_INFO_RECORD.search(low) is not None:
            return Severity.INFO
        return sig.severity

    def feed_many(self, lines: Iterable[str]) -> list[LogFinding]:
        """Feed lines, then :meth:`flush` (one batch)."""
        out: list[LogFinding] = []
        for line in lines:
            out.extend(self.feed(line))
        out.extend(self.flush())
        return out

    def loss_scale(self, value: float, line: str, skipped: float = 0.0) -> list[LogFinding]:
        """What an iteration line's extracted values say of the loss scale: ``value`` (NaN: not printed) and
        ``skipped``, the iterations it says were skipped (Megatron-LM's ``number of skipped iterations``).

        A skip, or a scale lower than the last one known (or the first one known, already below ``min_scale``), is
        an overflow of the streak; a scale that grew back ends the streak. Before the first iteration without one
        the run is in its fp16 warm-up (the scale falling from its initial value, one line per iteration when every
        one is logged): its length alone is no WARNING.
        """
        previous = self._scale
        fell = value < previous or (math.isnan(previous) and value < self.config.min_scale)
        if skipped > 0 or fell:
            return self._overflow_report(line, value, warmup=not self._settled)
        self._settled = True
        if value > previous:
            self._overflow = []  # the scaler grew the scale back: what came before was a passing overflow
            self._overflow_severity = 0
        if math.isfinite(value):
            self._scale = value
        return []

    def flush(self) -> list[LogFinding]:
        """End of a batch of lines: report what is held (a traceback cut by the batch, an error banner).

        Reported now rather than when the next batch shows where it ended: a crash's traceback is often the last
        thing a run prints. Cut before its exception line, it is reported again once that line names the error.
        """
        out: list[LogFinding] = []
        if self._banner is not None:
            out.extend(self._release_banner())
        tb = self._tb
        if tb is not None:
            sig = self._classify_traceback(tb)
            if sig.name != tb.reported:
                tb.reported = sig.name
                out.append(self._traceback_finding(tb, sig))
        return out

    # -- tracebacks ------------------------------------------------------------------------

    def _open_traceback(self, line: str, at: int, banner: tuple[int, str] | None) -> None:
        self._tb_prefix = line[:at]
        # The error banner just before ("ERROR ... Exception during training:") is where it shows first.
        self._tb = _Traceback(banner[0], [banner[1], line]) if banner is not None else _Traceback(self.index, [line])

    def _continue_traceback(self, line: str) -> bool:
        """Whether ``line`` still belongs to the open traceback (then it is added)."""
        tb = self._tb
        body = _strip_prefix(line, self._tb_prefix)
        stripped = body.strip()
        if not stripped:
            return True
        if _TB_START.search(body):
            tb.exception = ""  # a chained traceback: the same failure
            tb.last_file = False
            self._add(tb, line)
            return True
        if tb.exception:
            # After the exception line only indented details (two spaces or a tab, as Python indents them; a log
            # line that starts with one space, such as Megatron's " iteration ...", is the program going on) and
            # chaining notes still belong to it.
            if body[:2] == "  " or body[:1] == "\t" or _TB_CHAIN.search(body):
                self._add(tb, line)
                return True
            return False
        if body[:1] in (" ", "\t", "^", "~") or stripped.startswith("File "):
            tb.last_file = stripped.startswith("File ")
            tb.frames += tb.last_file
            self._add(tb, line)
            return True
        if _TB_CHAIN.search(body):
            self._add(tb, line)
            return True
        if tb.last_file:
            tb.last_file = False  # the code line under a frame, printed without indentation by some loggers
            self._add(tb, line)
            return True
        if tb.frames or _EXCEPTION_LINE.match(stripped):
            tb.exception = stripped
            self._add(tb, line)
            return True
        return False

    def _add(self, tb: _Traceback, line: str) -> None:
        if len(tb.lines) < self.config.max_traceback_lines:
            tb.lines.append(line)

    def _close_traceback(self) -> list[LogFinding]:
        tb, self._tb = self._tb, None
        sig = self._classify_traceback(tb)
        if sig.name == tb.reported:
            return []
        return [self._traceback_finding(tb, sig)]

    def _classify_traceback(self, tb: _Traceback) -> Signature:
        text = "\n".join(tb.lines)
        sig = classify(text)
        if sig is not None and sig.name not in ("http_5xx", "startup_stall"):
            return sig
        saving = any(_CHECKPOINT_FRAME.search(x) and _CHECKPOINT_PATH.search(x) for x in tb.lines)
        if saving or 0 <= tb.start - self._checkpoint_at <= 5:
            return _BY_NAME["checkpoint_save_failure"]
        return TRACEBACK

    def _traceback_finding(self, tb: _Traceback, sig: Signature) -> LogFinding:
        message = tb.exception or next((x.strip() for x in reversed(tb.lines) if x.strip()), "")
        severity = sig.severity if sig is not TRACEBACK else Severity.ERROR
        if sig is FP16:
            severity = Severity.CRITICAL
        return replace(self._finding(sig, severity, tb.start, tb.lines, message), held=True)

    def _release_banner(self) -> list[LogFinding]:
        at, line = self._banner
        self._banner = None
        if 0 <= at - self._checkpoint_at <= 5:
            sig = _BY_NAME["checkpoint_save_failure"]
            return [replace(self._finding(sig, Severity.ERROR, at, [line], line), held=True)]
        return [replace(self._finding(ERROR_LINE, Severity.WARNING, at, [line], line), held=True)]

    # -- stateful signatures -----------------------------------------------------------------

    def _overflow_line(self, line: str) -> list[LogFinding]:
        m = _OVERFLOW.search(line)
        return [] if m is None else self._overflow_report(line, _scale_after(m))

    def _overflow_report(self, line: str, scale: float, warmup: bool = False) -> list[LogFinding]:
        """One overflow (``scale``: the loss scale it left, NaN when unknown) added to the streak; its finding when
        the streak's severity rises. In the ``warmup`` the streak's length does not count, only the scale."""
        cfg = self.config
        ov = self._overflow
        if ov and self.index - ov[1] <= cfg.overflow_gap:
            ov[1] = self.index
            ov[2] += 1
            ov[3].append(line)
            if len(ov[3]) > cfg.max_evidence:
                del ov[3][1 : len(ov[3]) - cfg.max_evidence + 1]
        else:
            ov[:] = [self.index, self.index, 1, [line]]
            self._overflow_severity = 0
        at_floor = scale <= cfg.min_scale and self._scale <= cfg.min_scale  # the scaler could lower it no further
        if math.isfinite(scale):
            self._scale = scale
        severity = Severity.INFO
        if (math.isfinite(scale) and scale <= cfg.warn_scale) or (ov[2] >= cfg.overflow_streak and not warmup):
            severity = Severity.WARNING
        if (math.isfinite(scale) and scale < cfg.min_scale) or at_floor:
            severity = Severity.CRITICAL
        if severity <= self._overflow_severity:
            return []
        self._overflow_severity = int(severity)
        shown = f"; loss scale now {scale:g}" if math.isfinite(scale) else ""
        f = self._finding(FP16, severity, ov[0], list(ov[3]), f"{ov[2]} overflow skip(s){shown}: {line.strip()}")
        f.value = scale
        return [f]

    def _http_line(self, line: str) -> list[LogFinding]:
        cfg = self.config
        q = self._http
        q.append(self.index)
        while q and self.index - q[0] > cfg.http_window:
            q.popleft()
        sig = _BY_NAME["http_5xx"]
        if len(q) == 1:
            self._http_escalated = False
            return [self._finding(sig, Severity.WARNING, self.index, [line], line)]
        if len(q) >= cfg.http_errors and not self._http_escalated:
            self._http_escalated = True
            return [self._finding(sig, Severity.ERROR, q[0], [line], f"{len(q)} 5xx responses in {cfg.http_window} lines")]
        return []

    def _finding(self, sig: Signature, severity: Severity, first: int, lines: list[str], message: str) -> LogFinding:
        n = self.config.max_evidence
        if len(lines) > n:
            head = n // 4
            lines = lines[:head] + lines[len(lines) - (n - head) :]
        return LogFinding(sig.name, Severity(severity), first, list(lines), message.strip()[:500], sig.title, sig.hint)

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        tb = self._tb
        return {
            "index": self.index,
            "tb": None if tb is None else [tb.start, list(tb.lines), tb.exception, tb.reported, tb.frames, tb.last_file],
            "tb_prefix": self._tb_prefix,
            "banner": None if self._banner is None else list(self._banner),
            "checkpoint_at": self._checkpoint_at,
            "overflow": [self._overflow[0], self._overflow[1], self._overflow[2], list(self._overflow[3])]
            if self._overflow else [],
            "overflow_severity": self._overflow_severity,
            "scale": self._scale if math.isfinite(self._scale) else None,
            "settled": self._settled,
            "http": list(self._http),
            "http_escalated": self._http_escalated,
        }

    def load_state_dict(self, state: dict) -> None:
        self.index = int(state["index"])
        tb = state["tb"]
        self._tb = None if tb is None else _Traceback(
            int(tb[0]), [str(x) for x in tb[1]], str(tb[2]), str(tb[3]), int(tb[4]), bool(tb[5])
        )
        self._tb_prefix = str(state["tb_prefix"])
        b = state["banner"]
        self._banner = None if b is None else (int(b[0]), str(b[1]))
        self._checkpoint_at = int(state["checkpoint_at"])
        ov = state["overflow"]
        self._overflow = [int(ov[0]), int(ov[1]), int(ov[2]), [str(x) for x in ov[3]]] if ov else []
        self._overflow_severity = int(state["overflow_severity"])
        scale = state.get("scale")  # absent in states saved before iteration lines fed the streak
        self._scale = math.nan if scale is None else float(scale)
        self._settled = bool(state.get("settled", False))
        self._http = deque(int(x) for x in state["http"])
        self._http_escalated = bool(state["http_escalated"])


def _maybe_error(line: str, low: str) -> bool:
    return ("error" in low or "fatal" in low or "critical" in low or "[e" in low or line[:1] in ("E", "F")
            or "[crit]" in low or "[alert]" in low)


def is_error_record(line: str) -> bool:
    """Whether ``line`` is an error-level log record by its level field (``ERROR``/``FATAL``/``CRITICAL`` as loggers
    print them, glog's ``E0412 12:00``, ``"level": "error"``): the ``error_line`` signature's test. A lower-case word
    inside a message or a value (``error_analysis: enabled=False``) does not make one.

    A record relayed at ERROR level whose own message starts with a lower level (FastChat logs a child's stderr as
    ``| ERROR | stderr | INFO:     Started server process``) is that lower level.

    >>> is_error_record("2024-05-01 12:00:01 ERROR worker 3 lost"), is_error_record("error_analysis: enabled=False")
    (True, False)
    >>> is_error_record("2023-08-31 16:37:08 | ERROR | stderr | INFO:     Application startup complete.")
    False
    """
    if not _maybe_error(line, line.lower()):
        return False
    m = ERROR_LINE.pattern.search(line)
    return m is not None and _RELAYED_LOWER.match(line, m.end()) is None


# After an ERROR level field: at most one source name (``stderr |``), then a lower level of the relayed record's own.
_RELAYED_LOWER = re.compile(r"[^A-Za-z]*(?:[\w.-]+\s*[|:\]]\s*)?(?:INFO|DEBUG|WARNING|WARN|TRACE|NOTICE)\b")


def _scale_after(m: re.Match) -> float:
    """The loss scale an overflow message (a match of ``_OVERFLOW``) says it left; NaN when it says none."""
    scale = math.nan
    for g in ("to", "apex", "fs", "ms"):
        if m.group(g):
            scale = _float(m.group(g))
    if m.group("pd"):
        scale = _float(m.group("pd")) * _float(m.group("pdr"))
    if m.group("lg"):
        lg = _float(m.group("lg"))
        scale = 2.0**lg if lg < 1000 else math.inf
    return scale


def _float(text: str) -> float:
    try:
        return float(text.rstrip("."))
    except ValueError:
        return math.nan
