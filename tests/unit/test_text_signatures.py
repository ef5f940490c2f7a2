"""One test per failure signature, on lines written here in each framework's own format.

The formats follow the frameworks' sources (PyTorch's CUDA caching allocator and
ProcessGroupNCCL, DeepSpeed's loss_scaler, apex's amp scaler, fairseq's trainer,
torch.utils.data, torch.distributed.elastic, the Linux OOM killer, ...); the
lines themselves are made up.
"""

from __future__ import annotations

import pytest

from runwatch.models.findings import Severity
from runwatch.models.text.monitor import TextMonitor
from runwatch.models.text.signatures import SIGNATURES, SignatureConfig, SignatureMatcher, classify


def run(lines, **cfg):
    return SignatureMatcher(SignatureConfig(**cfg)).feed_many(lines)


def names(found):
    return [f.signature for f in found]


CASES = {
    "cuda_oom": [
        "node01:1234:5678 [0] include/alloc.h:48 NCCL WARN Cuda failure 'out of memory'",
        ("2024-01-01 10:00:00.000000: W tensorflow/core/common_runtime/bfc_allocator.cc:479] Allocator (GPU_0_bfc) ran "
         "out of memory trying to allocate 1.00GiB (rounded to 1073741824)requested by op MatMul"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of "
        "23.65 GiB of which 301.56 MiB is free. Including non-PyTorch memory, this process has 23.34 GiB memory in use."),
        ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with "
        "shape[64,1024,1024] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc"),
        # JAX/XLA, an XLA:TPU compile, Apple's MPS backend, vLLM's KV cache at start-up
        "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes.",
        ("RuntimeError: RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
        "Used 16.9G of 15.48G hbm. Exceeded hbm capacity by 1.4G."),
        "RuntimeError: MPS backend out of memory (MPS allocated: 17.20 GB, other allocations: 640.00 MB, max allowed: 18.13 GB).",
        ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine."),
        # llama.cpp's ggml allocator, LMDeploy's TurboMind, text-embeddings-inference, a JAX device buffer, SGLang at start-up
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc failed: out of memory",
        "RuntimeError: [TM][ERROR] CUDA runtime error: out of memory /lmdeploy/src/turbomind/utils/allocator.h:231",
        "    Could not start backend: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
        ("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Error allocating device buffer: Attempting to allocate 8.00G. "
        "That was not possible. There are 4.00G free."),
        "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.",
        "RuntimeError: CUDA driver error: out of memory",
        # a C++ CUDA check macro (TensorRT-LLM), also when the console wrapped the line before "out of memory"
        ("[TensorRT-LLM][ERROR] CUDA runtime error in ::cudaMallocAsync(ptr, n, mCudaStream->get()): out of memory "
         "(/app/tensorrt_llm/cpp/tensorrt_llm/runtime/tllmBuffers.h:112)"),
        "ream->get()): out of memory (/app/tensorrt_llm/cpp/tensorrt_llm/runtime/tllmBuffers.h:112)",
        # PyTorch's allocator under a per-process memory fraction (TGI's warm-up)
        ("thread 'main' panicked at 'Unable to warmup model: Generation(\"Allocation on device 0 would exceed allowed "
         "memory. (out of memory)\nCurrently allocated     : 16.08 GiB\nRequested               : 4.83 GiB"),
    ],
    "cpu_oom": [
        ("RuntimeError: [enforce fail at alloc_cpu.cpp:83] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 21474836480 bytes. Error code 12 (Cannot allocate memory)"),
        "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 37.3 GiB for an array with shape (100000, 50000)",
        # Ray's memory monitor: host memory, not the GPU's
        ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory. Memory on the node "
        "(IP: 10.0.0.4, ID: 5f2a) where the task was running was 61.80GB / 64.00GB (0.965), which exceeds the threshold"),
    ],
    "oom_killer": [
        "已杀死",  # bash's "Killed" under zh_CN: the job was SIGKILLed
        "Getötet",
        "gpu250: Killed",  # behind the host prefix of DeepSpeed's pdsh launcher
        "[default0]:Killed",
        "srun: error: node01: task 0: Out Of Memory",
        ("[1843021.554012] Out of memory: Killed process 48213 (python) total-vm:98123456kB, anon-rss:61234567kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:123456kB oom_score_adj:0"),
        ("E1105 10:02:11.482000 140230 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -9) "
        "local_rank: 3 (pid: 91822) of binary: /usr/bin/python3"),
        "Killed",
        "      Reason:       OOMKilled",  # kubectl describe pod
        "  exitcode  : -9 (pid: 52310)",  # torchrun's failure summary
        # Slurm's cgroup OOM handler
        ("slurmstepd: error: Detected 1 oom_kill event in StepId=123.0. Some of your processes may have been killed "
        "by the cgroup out-of-memory handler."),
    ],
    "nccl_timeout": [
        'frame #1: c10d::ProcessGroupNCCL::WorkNCCL::checkTimeout(std::optional<std::chrono::duration<long, std::ratio<1l, 1000l> > >) + 0x1d2 (0x1554e9e0f8f2 in /opt/conda/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so)',
        'Exception raised from ncclCommWatchdog at ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1521 (most recent call first):',
        ("[rank1]:[E1105 10:02:11.482041 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective operation "
        "timeout: WorkNCCL(SeqNum=3405, OpType=ALLREDUCE, NumelIn=262144, NumelOut=262144, Timeout(ms)=600000) ran "
        "for 600015 milliseconds before timing out."),
        ("[rank0]:[E1105 10:10:02.118 ProcessGroupNCCL.cpp:1335] [PG 0 Rank 0] ProcessGroupNCCL's watchdog got stuck "
        "for 480 seconds without making progress in monitoring enqueued collectives."),
        ("torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, "
        "unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5"),
        "RuntimeError: NCCL communicator was aborted on rank 5. Original reason for failure was: Watchdog timeout",
        ("RuntimeError: Timed out initializing process group in store based barrier on rank: 2, for key: "
        "store_based_barrier_key:1 (world_size=4, worker_count=3, timeout=0:30:00)"),
        ("[2024-02-01 08:00:00.000000: W /tmp/horovod/common/stall_inspector.cc:107] One or more tensors were "
        "submitted to be reduced, gathered or broadcasted by subset of ranks and are waiting for remainder of ranks "
        "for more than 60 seconds."),
        # torchrun's rendezvous and c10d store, and the collective desync check (TORCH_DISTRIBUTED_DEBUG=DETAIL)
        ("torch.distributed.DistStoreError: Timed out after 901 seconds waiting for clients. 1/2 clients joined."),
        ("torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError: The node 'gpu-7_3344_0' has failed to "
        "join the rendezvous 'job-12' within the timeout."),
        ("RuntimeError: Detected mismatch between collectives on ranks. Rank 0 is running collective: "
        "CollectiveFingerPrint(OpType=ALLREDUCE), but Rank 1 is running collective: CollectiveFingerPrint(OpType=BROADCAST)."),
        # the c10d store and its sockets: a rank that cannot reach the store is stuck the same way
        ("[E socket.cpp:957] [c10d] The client socket has timed out after 1800s while trying to connect to "
        "(10.0.0.1, 29500)."),
        "RuntimeError: Socket Timeout",
        "torch.distributed.DistNetworkError: Connection reset by peer",
        "node-3:1234:5678 [0] misc/socket.cc:538 NCCL WARN Net : Connection closed by remote peer 10.0.0.2<43210>",
        "gpu7:881:901 [3] NCCL WARN Call to recv from 10.1.1.4<54021> failed : Connection reset by peer",
    ],
    "nonfinite_message": [
        ("[2024-05-01 09:12:44,018] [WARNING] [engine.py:2031:step] detected nan/inf gradient, skipping the "
        "optimizer step"),
        "Loss is nan, stopping training",
        "Aboring, cost seems to be exploding. Run gradcheck? Lower the learning rate?",
        "  17/625 [>.............................] - ETA: 2:41 - loss: 3.2931Batch 17: Invalid loss, terminating training",
        "Warning: NaN or Inf found in input tensor.",
        ("2024-03-02 11:00:01 | WARNING | fairseq.nan_detector | NaN detected in output of encoder.layers.5.fc2, "
        "shape: torch.Size([512, 16, 1024]), forward"),
        "RuntimeError: Function 'LogSoftmaxBackward0' returned nan values in its 0th output.",
        "tensorflow.python.framework.errors_impl.InvalidArgumentError: Tensor had NaN values [[{{node CheckNumerics}}]]",
        "Monitored metric val_loss = nan is not finite. Previous best value was 0.388. Signaling Trainer to stop.",
        # Megatron-LM's count of iterations whose loss was NaN (its printed loss leaves them out)
        (" iteration      600/  500000 | lm loss: 7.500000E+00 | loss scale: 1.0 | grad norm: 2.345 | "
        "number of skipped iterations:   3 | number of nan iterations:   3 |"),
        "Skipping step: gradient norm is nan",
        "nan encountered in loss, reducing learning rate",
        # a loss tensor printed as it is, print(f"loss {loss}")
        "train loss tensor(nan, device='cuda:0', grad_fn=<NllLossBackward0>)",
    ],
    "dataloader_worker_killed": [
        "RuntimeError: unable to open shared memory object </torch_1234_567890> in read-write mode: Too many open files (24)",
        "RuntimeError: DataLoader worker (pid 28311) is killed by signal: Killed. ",
        "RuntimeError: DataLoader worker (pid(s) 4123, 4127) exited unexpectedly",
        "RuntimeError: DataLoader timed out after 120 seconds",
        "RuntimeError: Too many open files. Communication with the workers is no longer possible.",
    ],
    "checkpoint_save_failure": [
        "RuntimeError: Parent directory ./checkpoints/run1 does not exist.",
        ("RuntimeError: [enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
        "data/37: file write failed"),
        "ERROR:root:Failed to save checkpoint to s3://bucket/run-7/step_4000",
        # torch.save on a full or failing volume
        "RuntimeError: [enforce fail at inline_container.cc:595] . unexpected pos 1234567 vs 1234456",
    ],
    "disk_full": [
        "OSError: [Errno 28] No space left on device: '/ckpt/global_step1200/mp_rank_00_model_states.pt'",
        "OSError: [Errno 122] Disk quota exceeded: '/home/user/runs/epoch_12.pth'",
    ],
    "cuda_error": [
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "RuntimeError: cuDNN error: CUDNN_STATUS_MAPPING_ERROR",
        "[ 8812.301122] NVRM: Xid (PCI:0000:81:00): 79, pid=22341, GPU has fallen off the bus.",
        ("../aten/src/ATen/native/cuda/IndexKernel.cu:92: operator(): block: [0,0,0], thread: [3,0,0] Assertion "
        "`-sizes[i] <= index && index < sizes[i] && \"index out of bounds\"` failed. CUDA error: device-side assert triggered"),
        ("RuntimeError: The NVIDIA driver on your system is too old (found version 11040). CUDA driver version is "
        "insufficient for CUDA runtime version"),
        "RuntimeError: No CUDA GPUs are available; cudaErrorNoDevice: no CUDA-capable device is detected",
    ],
    "crash_signal": [
        'Unhandled exception caught in c10/util/AbortHandler.h',
        "F external/org_tensorflow/tensorflow/core/common_runtime/bfc_allocator.cc:458] Check failed: c->in_use()",
        "F0312 10:41:07.123456  1234 syncedmem.cpp:56] Check failed: error == cudaSuccess (2 vs. 0)  out of memory",
        "/usr/bin/tf_serving_entrypoint.sh: line 3:     8 Aborted                 tensorflow_model_server --port=8500",
        'Feb 26 10:05:54 gpu-host ollama[1499630]: goroutine 1 [running]:',
        'Feb 26 10:05:54 gpu-host ollama[1499630]:         runtime/asm_amd64.s:1700 +0x1 fp=0xc00048c7e8 sp=0xc00048c7e0 pc=0x5637658cf5a1',
        '\tgithub.com/ollama/ollama/llama/runner.go:345 +0x2a5 fp=0xc0000a5f40 sp=0xc0000a5e80 pc=0x55d1c3a2f1e5',
        "libggml-base.so(ggml_abort+0x152)[0x72edb99cda02]",  # a llama.cpp server's abort backtrace
        "[node-3:01234] *** Process received signal *** Signal: Segmentation fault (11)",
        "Fatal Python error: Segmentation fault",
        "bash: line 1:  4412 Bus error               (core dumped) python serve.py",
        "terminate called after throwing an instance of 'c10::Error'",
        "Segmentation fault (core dumped)",
        "make: *** [Makefile:5: start-embed-server] Error 139",  # exit status 128 + SIGSEGV
        "text-embeddings-router exited with code 139",
    ],
    "softmax_saturated": [
        "I1009 13:09:13.672638 86511 solver.cpp:229] Iteration 20, loss = 87.3365",
        "I0412 08:01:55.000101  2211 solver.cpp:245]     Train net output #0: loss = 87.3365 (* 1 = 87.3365 loss)",
    ],
    "rust_panic": [
        "thread 'tokio-runtime-worker' panicked at core/src/queue.rs:87:14:",
        "thread '<unnamed>' panicked at 'called `Result::unwrap()` on an `Err` value: ...', src/lib.rs:10:5",
        "pyo3_runtime.PanicException: called `Option::unwrap()` on a `None` value",
    ],
    "job_cancelled": [
        'W1130 12:13:49.388000 124326 torch/distributed/elastic/agent/server/api.py:723] Received 15 death signal, shutting down workers',
        ("[2024-01-01 10:00:00,000] torch.distributed.elastic.agent.server.api: [WARNING] Received Signals.SIGTERM "
         "death signal, shutting down workers"),
        "slurmstepd: error: *** JOB 88123 ON gpu-a100-12 CANCELLED AT 2024-04-01T03:00:12 DUE TO TIME LIMIT ***",
        "slurmstepd: error: *** STEP 88123.0 ON gpu-a100-12 CANCELLED AT 2024-04-01T03:00:12 DUE TO PREEMPTION ***",
    ],
    "model_load_failure": [
        ("2020-06-01 10:44:41.395608: I external/org_tensorflow/tensorflow/cc/saved_model/loader.cc:311] SavedModel load "
         "for tags { serve }; Status: fail. Took 82808 microseconds."),
        "2024-06-01T10:00:02.118Z ERROR text_generation_launcher: Error when initializing model",
        ("E0611 08:00:01.123 1 model_lifecycle.cc:626] failed to load 'llama' version 1: Internal: unable to create "
        "TensorRT engine"),
        ("E0611 08:00:01.123 1 model_lifecycle.cc:626] failed to load 'densenet_onnx' version 1: Invalid argument: "
        "model 'densenet_onnx', tensor 'data_0': the model expects 4 dimensions (shape [1,3,224,224])"),
        "2024-06-01T10:00:09.118Z ERROR text_generation_launcher: Shard 0 failed to start",
        "Error: ShardCannotStart",
        ("ValueError: The model's max seq len (131072) is larger than the maximum number of tokens that can be "
        "stored in KV cache (43200). Try increasing `gpu_memory_utilization` or decreasing `max_model_len`."),
        # llama.cpp, TF Serving, a state dict that does not fit the model, a weights file or checkpoint that cannot be read
        "llama_model_load: error loading model: unable to allocate backend buffer",
        "main: error: unable to load model",
        ("2024-05-01 10:00:00.000: E tensorflow_serving/util/retrier.cc:40] Loading servable: {name: resnet version: 1} "
        "failed: Not found: Could not find meta graph def matching supplied tags: { serve }."),
        "RuntimeError: Error(s) in loading state_dict for LlamaForCausalLM:",
        "OSError: Unable to load weights from pytorch checkpoint file for 'model.bin' at 'model.bin'.",
        "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory",
    ],
    "engine_dead": [
        # vLLM's API server after its engine process died, TGI's launcher losing a shard, llama.cpp's server loop
        "CRITICAL 02-25 11:11:34 launcher.py:101] MQLLMEngine is already dead, terminating server process",
        "2024-06-03T07:12:23.785971Z ERROR text_generation_launcher: Shard 0 crashed",
        "[1704891429] unexpected error in llama server update_slots - exiting main loop",
        ("2024-06-01T10:00:00,000 [INFO ] epollEventLoopGroup-5-1 org.pytorch.serve.wlm.WorkerThread - 9000 Worker "
         "disconnected. WORKER_STARTED"),
        "Stub process 'model_0' is not healthy.",
        ("ERROR 06-01 10:00:05 [async_llm.py:420] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered "
        "an issue. See stack trace (above) for the root cause."),
        ("2024-06-01T10:00:05,118 [DEBUG] W-9001-resnet_1.0 org.pytorch.serve.wlm.WorkerThread - Backend worker "
        "monitoring thread interrupted or backend worker process died."),
        "ray.exceptions.RayActorError: The actor died unexpectedly before finishing this task.",
        "[2024-06-01 10:00:05 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:12)",  # gunicorn's arbiter
        "  Warning  BackOff    2m (x41 over 12m)   kubelet  Back-off restarting failed container server in pod llm-0",
        "llm-server-7f9c5-xk2lp   0/1     CrashLoopBackOff   6 (2m ago)   14m",
        # a supervisor restarting a child it found gone; supervisord giving up on a program that keeps exiting
        "2025-03-01T10:00:20+00:00 - acme.worker.manager - WARNING - Inference server for GPU 1 is not running, pid 4242, restarting.",
        "2025-03-01 10:00:30,000 INFO gave up: model_server entered FATAL state, too many start retries too quickly",
        # Ollama's runner
        "Error: llama runner process has terminated: exit status 0xc0000409",
    ],
    "http_5xx": [
        "srv    send_error: task id = 289, error: Invalid input batch.",  # a llama.cpp server answering with an error
        'INFO:     10.0.0.7:51234 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
        "GET /healthz 127.0.0.1:40012 | status 503 | cost 2.01s",
        ("2024/06/01 10:00:05 [error] 31#31: *812 upstream timed out (110: Connection timed out) while reading "
        "response header from upstream, client: 10.0.0.9, server: _, request: \"POST /v1/chat/completions HTTP/1.1\""),
        "<html><head><title>502 Bad Gateway</title></head>",
        # nginx in front of a model server (what becomes the client's 502)
        ("2024/05/01 10:00:00 [error] 31#31: *1 upstream prematurely closed connection while reading response header "
        "from upstream, client: 10.0.0.1, server: _, request: \"POST /v1/completions HTTP/1.1\""),
        "2024/05/01 10:00:00 [error] 31#31: *5 connect() failed (111: Connection refused) while connecting to upstream",
        "2024/05/01 10:00:00 [error] 31#31: *9 no live upstreams while connecting to upstream, client: 10.0.0.1",
        # Ray Serve's request log (ray/serve/_private/logging_utils.py: "{method} {route} {status} {latency}ms")
        "INFO 2025-03-20 00:02:18,331 default_Model 6v27b6by 1f2e3d4c / replica.py:378 - POST /predict 500 12.3ms",
        "INFO 2025-03-20 00:02:18,331 default_Model 6v27b6by 1f2e3d4c -- __CALL__ ERROR 3.1ms",
    ],
    "request_timeout": [
        "I | 2025-03-20, 0:02:18.331 | replica | d4c5cca8 | ip-10-0-41-135 | 6v27b6by | GET / CANCELLED 60001.2ms",
        "grpc._channel._InactiveRpcError: <_InactiveRpcError of RPC that terminated with: status = StatusCode.DEADLINE_EXCEEDED",
        "openai.APITimeoutError: Request timed out.",
    ],
    "watchdog_timeout": [
        "[2025-01-01 10:00:00 TP3] Watchdog timeout (self.watchdog_timeout=300)",
    ],
    "kv_cache_exhausted": [
        "llama.cpp-gpu  | update_slots : failed to find free space in the KV cache, retrying with smaller n_batch = 256",
        "[2025-01-01 10:00:00 TP0] Decode out of memory happened. #retracted_reqs: 2, #new_token_ratio: 0.1000 -> 0.9000",
        ("WARNING 01-01 10:00:00 scheduler.py:1089] Sequence group 17 is preempted by PreemptionMode.RECOMPUTE mode "
         "because there is not enough KV cache space. This can affect the end-to-end performance."),
    ],
    "startup_stall": [
        ("WARNING deployment_state.py:1986 -- Deployment 'Model' in application 'app' has 2 replicas that have "
        "taken more than 30s to start up. This may be caused by waiting for the cluster to auto-scale."),
        ("  Warning  Unhealthy  31s (x12 over 3m)  kubelet  Readiness probe failed: Get \"http://10.1.2.3:8000/health\": "
        "dial tcp 10.1.2.3:8000: connect: connection refused"),
    ],
}


@pytest.mark.parametrize("signature", sorted(CASES))
def test_each_signature_fires_on_its_lines(signature):
    for line in CASES[signature]:
        found = run([line])
        assert names(found)[:1] == [signature], (line, found)
        assert found[0].line == 0 and found[0].lines == [line] and found[0].hint


def test_every_signature_has_a_case():
    assert {s.name for s in SIGNATURES} <= set(CASES)


HEALTHY = [
    (" iteration      500/  500000 | lm loss: 7.600000E+00 | loss scale: 1.0 | grad norm: 2.345 | "
     "number of skipped iterations:   0 | number of nan iterations:   0 |"),
    ("2024-05-01 09:12:44 | INFO | train_inner | epoch 003:    200 / 1975 loss=4.12, nll_loss=2.91, ppl=7.52, "
    "wps=130830, ups=2.15, lr=0.0005, gnorm=0.61, clip=0, oom=0, loss_scale=2, train_wall=48, wall=954"),
    "{'loss': 0.4121, 'grad_norm': 1.338, 'learning_rate': 4.8e-05, 'epoch': 0.31}",
    " 31%|███       | 310/1000 [02:11<04:52,  2.36it/s]",
    "[2024-05-01 09:12:44,018] [INFO] [logging.py:96:log_dist] [Rank 0] step=400, skipped=3, lr=[0.0003], mom=[(0.9, 0.95)]",
    "Saving checkpoint to ./out/ckpt.pt",
    "iter 2920: loss 3.9883, time 1099.34ms, mfu 15.34%",
    "INFO 05-06 04:33:07 [api_server.py:602] Starting vLLM server on http://0.0.0.0:8000",
    'INFO:     10.0.0.7:51234 - "POST /v1/completions HTTP/1.1" 200 OK',
    "INFO 2025-03-20 00:02:18,331 default_Model 6v27b6by 1f2e3d4c / replica.py:378 - GET / 200 5.3ms",
    "INFO 2025-03-20 00:02:18,331 default_Model 6v27b6by 1f2e3d4c / replica.py:378 - GET / CANCELLED 812.0ms",
    "INFO 2025-03-20 00:02:18,331 default_Model 6v27b6by 1f2e3d4c -- __CALL__ OK 12.3ms",
    "Job 4412 was cancelled by the user before it started",
    ("WARNING 05-06 04:32:56 [model.py:1449] Default sampling parameters have been overridden by the model's "
    "generation_config.json"),
    "Using the nanoGPT config with dropout 0.0 and info level logging",
    "Monitored metric val_loss did not improve in the last 3 records. Best score: 0.412. Signaling Trainer to stop.",
    "Epoch 12: val_loss improved from 0.41200 to 0.40100, saving model to ckpt.h5",
    "gpu-node-3:1234:1290 [0] NCCL INFO Channel 00/02 :    0   1   2   3",
    "NCCL version 2.20.5+cuda12.4",
    "Using cuDNN version 8902 with benchmark mode on",
    "slurmstepd: task 0 exited with exit code 0",
    "  exitcode  : 0 (pid: 52310)",
    "INFO Waiting for clients to connect on port 29500",
    "[I1105 10:00:00.000 torch/distributed/elastic/agent/server/api.py:525] Rendezvous complete for workers. Result:",
    "2024-06-01T10:00:03.000Z INFO text_generation_launcher: Shard ready in 12.3s rank=0",
    "I0611 08:00:01.123 1 model_lifecycle.cc:818] successfully loaded 'densenet_onnx' version 1",
    "  Normal   Started    12m   kubelet  Started container server",
    "[2024-06-01 10:00:05 +0000] [7] [INFO] Booting worker with pid: 12",
    "Epoch 1 step 20 loss: tensor(0.5123, device='cuda:0', grad_fn=<NllLossBackward0>)",
    "Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__ at 0x7f3a2c1d5e50>",
    "Processes Killed: 0",
    "Epoch 3: 0 workers killed, 8 alive",
    "[2025-01-01 10:00:00 TP0] Decode batch. #running-req: 3, #token: 900, token usage: 0.40, gen throughput (token/s): 95.10",
    "Watchdog enabled with a timeout of 300 s",
    "2025-01-01T10:00:00.000000Z  INFO text_embeddings_router: router/src/lib.rs:230: Starting model backend",
    "NVML initialized: 8 GPUs, driver 550.54",
    "1:00PM INF [llama-cpp] Loads OK",
    # FastChat relays a child's stderr at ERROR level: the relayed record's own level is INFO
    "2024-01-01 10:00:00 | ERROR | stderr | INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
    "FutureWarning: `torch.cuda.amp.GradScaler(args...)` is deprecated.",
    "I1009 13:09:13.672638 86511 solver.cpp:229] Iteration 2000, loss = 0.873365",  # not the saturated 87.3365
    "Iteration 40, loss = 187.3365",
    'Could not open File "config.yaml", falling back to defaults',  # a file name in quotes, not a frame
    "W1130 12:13:49.388000 124326 torch/distributed/elastic/agent/server/api.py:723] Received 2 death signal, shutting down workers",
    "time=2025-02-26T10:05:54 level=INFO source=server.go:596 msg=\"llama runner started in 2.01 seconds\"",
    "[I ProcessGroupNCCL.cpp:686] [Rank 0] ProcessGroupNCCL initialization options: NCCL_ASYNC_ERROR_HANDLING: 3, TIMEOUT(ms): 600000",
    ("W tensorflow/core/common_runtime/bfc_allocator.cc:275] Allocator (GPU_0_bfc) ran out of memory trying to allocate "
     "1.05GiB with freed_by_count=0. The caller indicates that this is not a failure, but may mean that there could be "
     "performance gains if more memory were available."),
    "Click: Aborted!",  # a CLI's Ctrl-C, not a signal
    ("2020-06-01 10:44:41.395608: I external/org_tensorflow/tensorflow/cc/saved_model/loader.cc:311] SavedModel load "
     "for tags { serve }; Status: success: OK. Took 82808 microseconds."),
    "use gradient clipping so that the loss does not start exploding",
    "I0611 08:00:01.123 1 model_lifecycle.cc:818] Check the model repository for 'densenet_onnx'",
]


def test_healthy_lines_raise_nothing():
    assert run(HEALTHY) == []


def test_traceback_is_one_finding_classified_by_its_exception():
    lines = [
        "[2024-05-01 09:12:44,018] [ERROR] Exception during training:",
        "Traceback (most recent call last):",
        '  File "/opt/conda/lib/python3.11/site-packages/torch/serialization.py", line 652, in save',
        "    _save(obj, opened_zipfile, pickle_module, pickle_protocol, _disable_byteorder_record)",
        '  File "/opt/conda/lib/python3.11/site-packages/torch/serialization.py", line 886, in _save',
        "    zip_file.write_record(name, storage, num_bytes)",
        "OSError: [Errno 28] No space left on device",
        "[2024-05-01 09:12:45,001] [INFO] shutting down",
    ]
    found = run(lines)
    assert names(found) == ["disk_full"]
    f = found[0]
    assert f.line == 0 and f.lines == lines[:7] and f.message == "OSError: [Errno 28] No space left on device"


def test_frames_without_their_header_are_a_traceback():
    # a log cut mid-traceback (MLServer's model load, an excerpt pasted without its first lines)
    found = SignatureMatcher().feed_many([
        '  File "/opt/mlserver/registry.py", line 161, in _load_model',
        "    model = await callback(model)",
        '  File "/opt/mlserver/parallel/dispatcher.py", line 128, in _dispatch_update',
        "    return await self._dispatch(worker_update)",
    ])
    assert [(f.signature, f.severity.name, f.line, len(f.lines)) for f in found] == [("python_exception", "ERROR", 0, 4)]


def test_frame_lines_behind_a_launcher_prefix_are_one_traceback():
    found = SignatureMatcher().feed_many([
        '[rank0]:   File "train.py", line 12, in <module>',
        "[rank0]:     loss.backward()",
        "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ])
    assert [(f.signature, f.line, len(f.lines)) for f in found] == [("cuda_oom", 0, 3)]


def test_unclassified_traceback_is_a_python_exception():
    lines = [
        "Traceback (most recent call last):",
        '  File "train.py", line 88, in <module>',
        "    main(cfg)",
        "KeyError: 'labels'",
    ]
    [f] = run(lines)
    assert (f.signature, f.severity) == ("python_exception", Severity.ERROR)
    assert f.lines == lines


def test_traceback_through_a_checkpoint_save_is_a_checkpoint_failure():
    lines = [
        "Traceback (most recent call last):",
        '  File "/ws/mmengine/hooks/checkpoint_hook.py", line 345, in after_train_epoch',
        "    self._save_checkpoint(runner)",
        '  File "/ws/mmengine/runner/checkpoint.py", line 780, in save_checkpoint',
        "    torch.save(checkpoint, f)",
        "RuntimeError: unexpected pos 2233152 vs 2233040",
    ]
    assert names(run(lines)) == ["checkpoint_save_failure"]


def test_error_right_after_a_checkpoint_save_began_is_a_checkpoint_failure():
    lines = [
        "[12/20 18:16:20 fvcore.common.checkpoint]: Saving checkpoint to ./output/model_0004999.pth",
        "ERROR [12/20 18:16:20 d2.engine.train_loop]: Exception during training:",
    ]
    [f] = run(lines)
    assert f.signature == "checkpoint_save_failure" and f.line == 1


def test_traceback_cut_by_a_batch_is_reported_then_completed():
    m = SignatureMatcher()
    first = [f for line in ["Traceback (most recent call last):", '  File "x.py", line 1, in f'] for f in m.feed(line)]
    first += m.flush()
    assert names(first) == ["python_exception"]
    second = [f for line in ["    y()", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "done"] for f in m.feed(line)]
    assert names(second) == ["cuda_oom"] and second[0].line == 0


def test_loss_scale_collapse_escalates_to_critical():
    # apex amp's dynamic scaler, halving on every overflow down past 1
    lines = [f"Gradient overflow.  Skipping step, loss scaler 0 reducing loss scale to {2.0 ** -k}" for k in range(-4, 2)]
    found = run(lines)
    assert [f.severity for f in found] == [Severity.INFO, Severity.WARNING, Severity.CRITICAL]
    assert {f.signature for f in found} == {"fp16_overflow"}
    assert found[-1].value == 0.5 and found[-1].line == 0


def test_warmup_overflows_stay_info():
    lines = [
        f"[2024-03-02 11:20:3{i},442] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 "
        f"Skipping step. Attempted loss scale: {2 ** (16 - i)}, reducing to {2 ** (15 - i)}"
        for i in range(3)
    ]
    found = run(lines)
    assert [f.severity for f in found] == [Severity.INFO]


def test_fairseq_overflow_and_minimum_scale():
    found = run([
        "2024-05-01 09:12:44 | INFO | fairseq.trainer | NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: 4.0",
        ("FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding. Try lowering the "
        "learning rate, using gradient clipping or increasing the batch size."),
    ])
    assert (found[0].signature, found[0].severity) == ("fp16_overflow", Severity.WARNING)
    assert "nonfinite_message" in names(found) or found[-1].severity == Severity.CRITICAL


def test_mindspore_overflow_messages_are_an_overflow_streak():
    # MindSpore's dynamic loss scale logs the overflow and the scale it adjusted to, whether or not it skipped the step
    lines = ["2025-01-01 10:00:00,000 [WARNING] overflow, still update, loss scale adjust to 512.0",
             "2025-01-01 10:00:01,000 [INFO] Epoch 1/10, Step 10/100, loss: 3.2100, cur_lr: 0.01",
             "2025-01-01 10:00:02,000 [WARNING] overflow, loss scale adjust to 4.0"]
    found = run(lines)
    assert [(f.signature, f.severity, f.value) for f in found] == [
        ("fp16_overflow", Severity.INFO, 512.0), ("fp16_overflow", Severity.WARNING, 4.0)]


def test_older_deepspeed_overflow_lines_feed_the_streak_once_per_overflow():
    # DeepSpeed before its "OVERFLOW!" wording: one log_dist line per overflow (beside per-rank lines, not counted)
    lines = ["[2021-01-01 10:00:00,000] [INFO] [fused_optimizer.py:316:_update_scale] Reducing dynamic loss scale from 2 to 1",
             ("[2021-01-01 10:00:00,000] [INFO] [logging.py:60:log_dist] [Rank 0] Overflow detected. Skipping step. "
              "Attempted loss scale: 2, reducing to 1")]
    found = run(lines)
    assert [(f.signature, f.severity, f.value, f.line) for f in found] == [("fp16_overflow", Severity.WARNING, 1.0, 1)]


def test_overflow_abort_is_critical():
    [f] = run(["Exception: Current loss scale already at minimum - cannot decrease scale anymore. Exiting run."])
    assert (f.signature, f.severity) == ("fp16_overflow", Severity.CRITICAL)


def test_extracted_loss_scale_below_minimum():
    m = SignatureMatcher()
    [f] = m.loss_scale(0.125, "iteration 900/3000 | lm loss 4.79 | loss scale 0.125 |")
    assert (f.signature, f.severity) == ("fp16_overflow", Severity.CRITICAL)
    assert m.loss_scale(0.0625, "again") == []  # the incident is already critical


def megatron_line(iteration: int, scale: float, skipped: int, nan: int = 0) -> str:
    """Megatron-LM's ``training_log`` line (megatron/training/training.py): its fields in its own formats."""
    return (
        f" [2024-05-01 12:{iteration // 60 % 60:02d}:{iteration % 60:02d}] iteration {iteration:8d}/{1000:8d} |"
        f" consumed samples: {iteration * 256:12d} | elapsed time per iteration (ms): {512.3:.1f} |"
        f" learning rate: {3e-4:.6E} | global batch size: {256:5d} | lm loss: {2.5:.6E} |"
        f" loss scale: {scale:.1f} | grad norm: {1.234:.3f} |"
        f" number of skipped iterations: {skipped:3d} | number of nan iterations: {nan:3d} |"
    )


def overflow_severities(lines):
    tm = TextMonitor("r")
    _, found = tm.observe_lines(lines)
    return [f.severity for f in found if f.key == "fp16_overflow"]


def test_megatron_skipped_iterations_are_an_overflow_streak():
    """The loss scale halving 65536 -> 2 with a skipped iteration on every line (was: nothing, since Megatron's
    scale never goes below its floor of 1): INFO on the first, WARNING once the streak is long, not CRITICAL."""
    lines = [megatron_line(it, 2.0**16, 0) for it in range(1, 60)]
    lines += [megatron_line(59 + k, 2.0 ** (16 - k), 1) for k in range(1, 16)]
    assert overflow_severities(lines) == [Severity.INFO, Severity.WARNING]


def test_megatron_overflows_at_the_scale_floor_are_critical():
    """Megatron's scaler stops at ``min_loss_scale`` (1.0): skipped iterations there are steps lost for good."""
    lines = [megatron_line(k, max(2.0 ** (16 - k), 1.0), 1) for k in range(1, 20)]
    assert overflow_severities(lines) == [Severity.INFO, Severity.WARNING, Severity.CRITICAL]


def test_a_loss_scale_that_grows_back_ends_the_streak():
    """Dynamic scaling at its equilibrium (an overflow halves the scale, a clean window doubles it back), and the
    fp16 warm-up's many skips in the first interval: each is a passing overflow, never a WARNING."""
    lines = [megatron_line(1, 2.0**16, 16)]
    for cycle in range(12):
        base = 2 + cycle * 3
        lines += [megatron_line(base, 2.0**15, 1), megatron_line(base + 1, 2.0**15, 0)]
        lines.append(megatron_line(base + 2, 2.0**16, 0))
    assert set(overflow_severities(lines)) == {Severity.INFO}


def test_the_fp16_warm_up_of_a_run_logging_every_iteration_stays_info():
    """``--log-interval 1`` from Megatron's initial scale of 2**32: twenty skipped iterations in a row as the scale
    finds its level, then clean ones. A long streak, but the run's warm-up: INFO (its scale never came near 8)."""
    lines = [megatron_line(k, 2.0 ** (32 - k), 1) for k in range(1, 21)]
    lines += [megatron_line(k, 2.0**12, 0) for k in range(21, 40)]
    assert overflow_severities(lines) == [Severity.INFO]


def test_a_falling_extracted_loss_scale_feeds_the_streak():
    """A log that prints the scale but no skip count (an older Megatron line): a scale below the last one is an
    overflow, so the fall to 8 is a WARNING before the collapse below 1."""
    line = " iteration {:8d}/{:8d} | lm loss: 6.1E+00 | loss scale: {:.1f} |"
    lines = [line.format(it, 3000, scale) for it, scale in ((400, 64.0), (500, 8.0), (600, 4.0), (700, 0.5))]
    assert overflow_severities(lines) == [Severity.WARNING, Severity.CRITICAL]


def test_repeated_5xx_escalates():
    line = 'INFO:     10.0.0.7:51234 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error'
    found = run([line] * 6)
    assert [f.severity for f in found] == [Severity.WARNING, Severity.ERROR]


def test_nan_message_on_a_line_with_extracted_metrics_is_left_to_the_metric_detectors():
    m = SignatureMatcher()
    assert m.feed("{'loss': nan, 'grad_norm': nan, 'learning_rate': 1e-05, 'epoch': 0.1}", extracted=True) == []
    assert names(m.feed("[Loss] nan | [step] 104", extracted=False)) == ["nonfinite_message"]


def test_a_relayed_record_keeps_its_own_level():
    assert names(run(["2024-01-01 10:00:00 | ERROR | stderr | INFO:     Waiting for application startup."])) == []
    relayed_error = "2024-01-01 10:00:00 | ERROR | stderr | ERROR:    Exception in ASGI application"
    assert names(run([relayed_error])) == ["http_5xx"]
    assert names(run(["2024-01-01 10:00:00 | ERROR | stderr | worker crashed while loading", "done"])) == ["error_line"]


def test_generic_error_line():
    [f] = run(["2024-05-01 09:12:44,018 - mmengine - ERROR - something went wrong in the hook"])
    assert (f.signature, f.severity) == ("error_line", Severity.WARNING)
    assert run(["2024-05-01 09:12:44,018 - mmengine - ERROR - x"], error_lines=False) == []


def test_a_missed_elastic_rendezvous_keep_alive_is_a_warning_not_a_failure():
    line = ("WARNING:torch.distributed.elastic.rendezvous.dynamic_rendezvous:The node 'n1_42_0' has failed to send a "
            "keep-alive heartbeat to the rendezvous '7' due to an error of type RendezvousTimeoutError.")
    assert [(f.signature, f.severity) for f in run([line])] == [("nccl_timeout", Severity.WARNING)]
    assert run(["torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError"])[0].severity == Severity.CRITICAL


def test_tensorflows_retried_allocation_is_information_not_an_oom():
    retry = ("2021-05-09 18:30:53.337423: I tensorflow/stream_executor/cuda/cuda_driver.cc:789] failed to allocate "
             "613.15M (642935552 bytes) from device: CUDA_ERROR_OUT_OF_MEMORY: out of memory")
    assert [(f.signature, f.severity) for f in run([retry])] == [("cuda_oom", Severity.INFO)]
    oom = ("2021-05-09 18:30:53.337423: W tensorflow/core/framework/op_kernel.cc:1767] OP_REQUIRES failed at "
           "conv_ops.cc:539 : Resource exhausted: OOM when allocating tensor with shape[64,256,56,56]")
    assert run([oom])[0].severity == Severity.CRITICAL


def test_classify():
    assert classify("RuntimeError: CUDA out of memory.").name == "cuda_oom"
    assert classify("all good") is None


def test_state_round_trip_mid_traceback():
    import json

    a = SignatureMatcher()
    for line in ["Traceback (most recent call last):", '  File "x.py", line 1, in f']:
        a.feed(line)
    b = SignatureMatcher()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    tail = ["    f()", "ValueError: bad", "next"]
    assert [x for line in tail for x in a.feed(line)] == [x for line in tail for x in b.feed(line)]



def test_the_line_screen_passes_exactly_the_lines_holding_a_key():
    """A line is matched against the signatures only when the screen finds one of their keys in it."""
    from runwatch.models.text.signatures import _KEYS, _screen

    keys = {k for keys in _KEYS.values() for k in keys}
    assert all(_screen(f"xx {k} yy") for k in keys)
    assert not any(_screen(line.lower()) for line in ["epoch 3 step 200 loss=0.41", "worker started on port 8000",
                                                      "info: inference server ready", "model saved to out/"])


@pytest.mark.parametrize("line", [
    "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    "[rank3]: torch.distributed.DistBackendError: remote process exited or there was a network error",
    "gpu250: KeyError: 'input_ids'",
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
])
def test_an_exception_line_without_its_traceback_is_a_python_exception(line):
    # What a user pastes from the end of a traceback, or a launcher prints for a rank that failed.
    [f] = run([line])
    assert (f.signature, f.severity, f.lines) == ("python_exception", Severity.ERROR, [line])


# Message formats read in each framework's own source; every line below is made up in that format.
# (signature, severity of the first finding, line)
C, E, W, I = Severity.CRITICAL, Severity.ERROR, Severity.WARNING, Severity.INFO
FRAMEWORK_FORMATS = [
    # cuda_oom -- tensorflow eager ops ("failed to allocate memory [Op:...]"); onnxruntime core/framework/bfc_arena.cc;
    # text-generation-inference server/text_generation_server/models/flash_causal_lm.py (warm-up); cuDNN status names
    ("cuda_oom", C, ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: {{function_node "
                     "__wrapped__Conv2D_device_/job:localhost/replica:0/task:0/device:GPU:0}} failed to allocate memory "
                     "[Op:Conv2D]")),
    ("cuda_oom", C, ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Gemm node. "
                     "Status Message: bfc_arena.cc:376 AllocateRawInternal Failed to allocate memory for requested "
                     "buffer of size 1073741824")),
    ("cuda_oom", C, "RuntimeError: Not enough memory to handle 8192 prefill tokens. You need to decrease `--max-batch-prefill-tokens`"),
    ("cuda_oom", C, "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    # nccl_timeout -- pytorch torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp (watchdog, heartbeat monitor),
    # gloo transport/tcp/unbound_buffer.cc, ProcessGroupWrapper's monitoredBarrier, elastic rendezvous/api.py,
    # NCCL src/transport/net_ib.cc
    ("nccl_timeout", C, ("[rank3]:[E1105 10:12:00.100 ProcessGroupNCCL.cpp:1537] [PG 0 Rank 3] Timeout at NCCL work: 4410, "
                         "last enqueued NCCL work: 4411, last completed NCCL work: 4409.")),
    ("nccl_timeout", C, ("[rank3]:[E1105 10:12:00.100 ProcessGroupNCCL.cpp:1664] [PG 0 (default_pg) Rank 3] Exception "
                         "(either an error or timeout) detected by watchdog at work: 4410, last enqueued NCCL work: 4411")),
    ("nccl_timeout", C, ("[rank3]:[E710 10:12:00.100 ProcessGroupNCCL.cpp:2271] [PG ID 0 PG GUID 0(default_pg) Rank 3]  "
                         "failure detected by watchdog at work sequence id: 4410 PG status: last enqueued work: 4411")),
    ("nccl_timeout", C, ("[rank0]:[E1105 10:20:00.000 ProcessGroupNCCL.cpp:1316] [PG 0 Rank 0] Heartbeat monitor timed "
                         "out! Process will be terminated after dumping debug info. workMetaList_.size()=1")),
    ("nccl_timeout", C, ("RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
                         "waiting 1800000ms for recv operation to complete")),
    ("nccl_timeout", C, "RuntimeError: [Rank 0]: Rank 2 failed to pass monitoredBarrier in 30000 ms"),
    ("nccl_timeout", C, ("torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d "
                         "store has failed. See inner exception for details.")),
    ("nccl_timeout", C, ("gpu12:881:940 [1] transport/net_ib.cc:1295 NCCL WARN NET/IB : Got completion from peer "
                         "10.2.0.12<51022> with error 12, opcode 0, len 0, vendor err 129 (Recv)")),
    # oom_killer -- deepspeed launcher/launch.py, text-generation-inference launcher/src/main.rs, a shell's job report,
    # slurm srun, docker/kubectl exit code 137, LSF TERM_MEMLIMIT, ray's memory monitor (raylet node_manager.cc)
    ("oom_killer", C, ("[2024-06-01 10:00:00,000] [ERROR] [launch.py:321:sigkill_handler] ['/usr/bin/python', '-u', "
                       "'train.py', '--local_rank=1'] exits with return code = -9")),
    ("oom_killer", C, ("2024-06-01T10:00:00.000000Z ERROR shard-manager: text_generation_launcher: Shard process was "
                       "signaled to shutdown with signal 9 rank=0")),
    ("oom_killer", C, "/var/spool/slurmd/job4711/slurm_script: line 9: 30122 Killed                  python train.py"),
    ("oom_killer", C, "srun: error: gpu-a100-03: task 1: Killed"),
    ("oom_killer", C, "[2023-05-23 10:55:58,501] [INFO] [launch.py:428:sigkill_handler] Killing subprocess 31621"),
    ("oom_killer", C, "trainer-1 exited with code 137"),
    ("oom_killer", C, "      Exit Code:    137"),
    ("oom_killer", C, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit."),
    ("oom_killer", C, ("(raylet) node_manager.cc:3007: 1 Workers (tasks / actors) killed due to memory pressure (OOM), "
                       "0 Workers crashed due to other reasons at node (ID: 7a1c, IP: 10.0.0.9)")),
    # crash_signal -- torch.distributed.elastic multiprocessing/errors (SignalException, failure summary), deepspeed's
    # launcher, glibc's malloc checks
    ("crash_signal", C, "  traceback : Signal 6 (SIGABRT) received by PID 30123"),
    ("crash_signal", C, "  exitcode  : -11 (pid: 30123)"),
    ("crash_signal", C, ("[2024-06-01 10:00:00,000] torch.distributed.elastic.multiprocessing.api: [ERROR] failed "
                         "(exitcode: -6) local_rank: 0 (pid: 30123) of binary: /usr/bin/python3")),
    ("crash_signal", C, "[launch.py:321:sigkill_handler] ['/usr/bin/python', 'train.py'] exits with return code = -11"),
    ("crash_signal", C, "double free or corruption (out)"),
    ("crash_signal", C, "free(): invalid pointer"),
    # boost::stacktrace's dump on a fatal signal (tritonserver), its first frame
    ("crash_signal", C, " 0# 0x0000559CB99E68A9 in tritonserver"),
    ("crash_signal", C, " 0# 0x00007f3a1c2b4e10 in /opt/tritonserver/lib/libtritonserver.so"),
    # fp16_overflow -- apex amp (_process_optimizer.py, older scaler), fairseq optim/amp_optimizer.py,
    # PaddlePaddle amp/grad_scaler.py, gpt-neox megatron/training.py (OverflowMonitor)
    ("fp16_overflow", I, "Gradient overflow, skipping update"),
    ("fp16_overflow", I, "2024-06-01 10:00:00 | INFO | fairseq.optim.amp_optimizer | AMP: overflow detected, setting scale to to 32.0"),
    ("fp16_overflow", I, "Found inf or nan, current scale is: 4096.0, decrease to: 4096.0*0.5"),
    ("fp16_overflow", C, "Exception: Skipped 50 iterations in a row due to Overflow - Exiting training."),
    ("fp16_overflow", C, ("FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding. Try "
                          "lowering the learning rate, using gradient clipping or increasing the batch size.")),
    # nonfinite_message -- Lightning loops/utilities.py (_check_finite), mmcv/mmengine CheckInvalidLossHook,
    # torch.multinomial (aten Distributions.cpp), Megatron-LM param_and_grad_buffer.py
    ("nonfinite_message", E, "ValueError: The loss returned in `training_step` is nan."),
    # custom training loops' own wording
    ("nonfinite_message", E, "step 3000: training loss exploded to inf, stopping"),
    ("nonfinite_message", E, "[worker 2] gradients blew up to NaN at iteration 8120"),
    ("nonfinite_message", E, "2024-06-01 10:00:00,000 - mmdet - INFO - loss become infinite or NaN!"),
    ("nonfinite_message", E, "RuntimeError: probability tensor contains either `inf`, `nan` or element < 0"),
    ("nonfinite_message", E, ("AssertionError: Rank 7: found NaN in local grad norm in backward pass before data-parallel "
                              "communication collective. Device: 7, node: gpu-12")),
    # checkpoint_save_failure / disk_full -- safetensors' serializer, transformers' save_pretrained (shared tensors),
    # containerd/docker writing lower-case "no space left on device"
    ("checkpoint_save_failure", C, ("[16:24:41] include/dmlc/logging.h:303: [16:24:41] src/io/local_filesys.cc:39: Check "
                                    "failed: std::fwrite(ptr, 1, size, fp_) == size FileStream.Write incomplete")),
    ("checkpoint_save_failure", C, ("safetensors_rust.SafetensorError: Error while serializing: IoError(Os { code: 5, "
                                    "kind: Uncategorized, message: \"Input/output error\" })")),
    ("checkpoint_save_failure", C, ("RuntimeError: Some tensors share memory, this will lead to duplicate memory on disk "
                                    "and potential differences when loading them again: [{'lm_head.weight', 'embed.weight'}].")),
    ("disk_full", C, "failed to register layer: write /usr/local/lib/libnccl.so.2: no space left on device"),
    # cuda_error -- CUDA runtime/driver error names, nvidia-smi when the driver lost the GPU
    ("cuda_error", C, "Cuda failure 'cudaErrorLaunchFailure' at /workspace/src/attention.cu:88"),
    ("cuda_error", C, "E0601 10:00:00.000 cuda_driver.cc:1099] failed to synchronize: CUDA_ERROR_ILLEGAL_ADDRESS"),
    ("cuda_error", C, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
    ("cuda_error", C, "Unable to determine the device handle for GPU 0000:41:00.0: Unknown Error"),
    # engine_dead -- vllm engine/multiprocessing (MQ engine), vllm v1 executor (multiproc / ray), sglang scheduler and
    # launcher, ray core and serve (deployment_state.py), torchserve WorkerThread, text-generation-inference launcher
    ("engine_dead", C, "ERROR 06-01 10:00:00 client.py:250] RuntimeError('Engine loop has died')"),
    ("engine_dead", C, ("(EngineCore_DP0 pid=311) ERROR 06-01 10:00:00 [multiproc_executor.py:149] Worker proc "
                        "VllmWorker-3 died unexpectedly, shutting down executor.")),
    ("engine_dead", C, "ERROR 06-01 10:00:00 [ray_executor_v2.py:464] RayWorkerProc rank=[1] died unexpectedly, shutting down executor."),
    ("engine_dead", C, "[2024-06-01 10:00:00 TP0] Scheduler hit an exception: Traceback (most recent call last):"),
    ("engine_dead", C, "[2024-06-01 10:00:00] Received sigquit from a child process. It usually means the child failed."),
    ("engine_dead", C, ("(raylet) A worker died or was killed while executing a task by an unexpected system error. To "
                        "troubleshoot the problem, check the logs for the dead worker.")),
    ("engine_dead", C, ("WARNING 2024-06-01 10:00:00,000 controller 88 deployment_state.py:2100 - Replica(id='x1y2', "
                        "deployment='LLM', app='default') failed health check, stopping it.")),
    ("engine_dead", C, "2024-06-01T10:00:00,000 [ERROR] W-9001-bert_1.0 org.pytorch.serve.wlm.WorkerThread - Backend worker error"),
    ("engine_dead", C, ("org.pytorch.serve.wlm.WorkerInitializationException: Backend worker did not respond in given "
                        "time")),
    ("engine_dead", C, "2024-06-01T10:00:00.000000Z ERROR text_generation_launcher: Webserver Crashed"),
    # model_load_failure -- vllm v1 engine/core_client.py and engine/multiprocessing, transformers (auto config,
    # tokenizer and hub lookups), llama.cpp, Triton's server start-up, Ray Serve's replica constructor, TGI's launcher
    ("model_load_failure", C, "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"),
    ("model_load_failure", C, "RuntimeError: Engine process failed to start. See stack trace for the root cause."),
    ("model_load_failure", C, ("ValueError: The checkpoint you are trying to load has model type `foo3` but Transformers "
                               "does not recognize this architecture.")),
    ("model_load_failure", C, "OSError: Can't load tokenizer for 'acme/llm-9b'. Make sure 'acme/llm-9b' is the correct path."),
    ("model_load_failure", C, ("OSError: acme/llm-9b is not a local folder and is not a valid model identifier listed on "
                               "'https://huggingface.co/models'")),
    ("model_load_failure", C, "llama_load_model_from_file: failed to load model"),
    ("model_load_failure", C, "error: creating server: Internal - failed to load all models"),
    ("model_load_failure", C, ("The deployment failed to start 3 times in a row. This may be due to a problem with its "
                               "constructor or initial health check failing.")),
    ("model_load_failure", C, "Error: ShardFailed"),
    # KServe's model server (kserve/model_server: "fail to load model ..."), Triton's model repository manager polling
    ("model_load_failure", C, ("[E 250101 10:00:00 __main__:40] fail to load model sk-iris from dir /mnt/models. exception "
                               "type <class 'RuntimeError'>, exception msg: Missing Model File.")),
    ("model_load_failure", C, ("E0101 10:00:00.000000 1 model_repository_manager.cc:1200] failed to poll model 'resnet': "
                               "model not found in any model repository.")),
    # model_load_failure -- LocalAI's backends, text-embeddings-inference's router
    ("model_load_failure", C, "1:00PM INF [llama-cpp] Fails: could not load model: rpc error: code = Unavailable desc = EOF"),
    ("model_load_failure", C, "2025-01-01T10:00:00.000000Z ERROR text_embeddings_router: router/src/main.rs:40: Could not create backend"),
    # crash_signal -- a failed assertion aborts the process: ggml's GGML_ASSERT (llama.cpp servers), C's assert
    ("crash_signal", C, "src/llama.cpp:4242: GGML_ASSERT(n_tokens <= n_batch) failed"),
    ("crash_signal", C, "Signal (11) received."),  # Triton's signal handler, before its stack trace
    # TensorRT-LLM's TLLM_CHECK: the exception it throws ends the process
    ("crash_signal", C, "[TensorRT-LLM][ERROR] Assertion failed: tp * pp == worldSize (/src/runtime/worldConfig.cpp:90)"),
    # engine_dead -- vLLM's async engine logging its background loop's failure
    ("engine_dead", C, "ERROR 01-01 10:00:00 async_llm_engine.py:61] Engine background task failed"),
    # cuda_oom -- PyTorch before 1.1 (THC's allocator and THCudaCheck), and 0.4's bare RuntimeError
    ("cuda_oom", C, "RuntimeError: cuda runtime error (2) : out of memory at /opt/src/THC/THCCachingAllocator.cpp:510"),
    ("cuda_oom", C, "THCudaCheck FAIL file=/opt/src/THC/generic/THCStorage.cu line=58 error=2 : out of memory"),
    ("cuda_oom", C, "RuntimeError: out of memory"),
    # cuda_error -- THC's other error codes, cuDNN failing to start (PyTorch, TensorFlow), cuBLAS in TensorFlow
    ("cuda_error", C, "RuntimeError: cuda runtime error (30) : unknown error at /opt/src/THC/THCGeneral.cpp:70"),
    ("cuda_error", C, "RuntimeError: CUDNN_STATUS_NOT_INITIALIZED"),
    ("cuda_error", C, ("tensorflow.python.framework.errors_impl.UnknownError: Failed to get convolution algorithm. This is "
                       "probably because cuDNN failed to initialize")),
    ("cuda_error", C, "tensorflow.python.framework.errors_impl.InternalError: Blas GEMM launch failed : a.shape=(8, 4)"),
    # dataloader_worker_killed -- torch.utils.data's worker signal handler; a full /dev/shm when a batch is handed over
    ("dataloader_worker_killed", C, "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm)."),
    ("dataloader_worker_killed", C, "ERROR: Unexpected segmentation fault encountered in worker."),
    ("dataloader_worker_killed", C, "RuntimeError: unable to write to file </torch_4242_1234567890>"),
    # cuda_oom -- JAX/XLA on GPU, PaddlePaddle's allocator, torch_npu (Ascend)
    ("cuda_oom", C, ("2025-01-01 10:00:00.000000: W external/xla/xla/stream_executor/bfc.cc] RESOURCE_EXHAUSTED: Failed "
                     "to allocate request for 1.50GiB (1610612736B) on device ordinal 0")),
    ("cuda_oom", C, "ResourceExhaustedError: Out of memory error on GPU 1. Cannot allocate 256.000000MB memory on GPU 1"),
    ("cuda_oom", C, "RuntimeError: NPU out of memory. Tried to allocate 1.00 GiB (NPU 0; 60.00 GiB total capacity)"),
    # nccl_timeout -- older PyTorch's NCCL errors; gloo's TCP transport when a peer rank went away
    ("nccl_timeout", C, "RuntimeError: NCCL Error 2: unhandled system error"),
    ("nccl_timeout", C, "RuntimeError: [/opt/gloo/gloo/transport/tcp/pair.cc:589] Connection closed by peer [10.0.0.7]:4242"),
    # oom_killer -- zsh's report of a foreground job the kernel killed
    ("oom_killer", C, "zsh: killed     python train.py --epochs 10"),
    # nonfinite_message -- scikit-learn refusing NaN predictions (a metric computed on a model's NaN outputs)
    ("nonfinite_message", E, "ValueError: Input contains NaN, infinity or a value too large for dtype('float32')."),
    # cuda_error -- cuBLAS failing to create its handle (usually no GPU memory left), PyTorch without a working driver
    ("cuda_error", C, "RuntimeError: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    ("cuda_error", C, "RuntimeError: CUDA driver initialization failed, you might not have a CUDA gpu."),
    # cuda_oom -- XLA's TPU allocator (PyTorch/XLA, JAX)
    ("cuda_oom", C, ("2025-01-01 10:00:00.000000: E xla_util.cc:88] RESOURCE_EXHAUSTED: Attempting to reserve 3.10G at "
                     "the bottom of memory. That was not possible. There are 2.90G free, 0B reserved, and 1.20G reservable.")),
    ("crash_signal", C, "python: ../src/decoder.c:120: decode_step: Assertion `ctx->pos < ctx->len' failed."),
    # cuda_error -- NVML unable to talk to the driver (nvidia-smi's library, what GPU-probing start-up scripts call)
    ("cuda_error", C, "pynvml.NVMLError_Unknown: Unknown Error"),
    ("cuda_error", C, "RuntimeError: Failed to initialize NVML: Driver/library version mismatch"),
    # nccl_timeout -- NCCL's socket layer unable to reach a peer at all
    ("nccl_timeout", C, ("node3:100:100 [2] misc/socket.cc:540 NCCL WARN socketPollConnect: Connect to 10.1.2.3<40001> "
                         "returned 113(No route to host) errno 115(Operation now in progress)")),
    # engine_dead -- Ray Serve's controller stopping a replica whose constructor or health check raised
    ("engine_dead", C, ("(ServeController pid=4242) ERROR 2025-01-01 10:00:00,000 controller 4242 -- Exception in "
                        "Replica(id='abc123', deployment='LLM', app='default'), the replica will be stopped.")),
    # crash_signal -- older llama.cpp (and Ollama's bundled copy) print the assertion as "GGML_ASSERT: file:line: cond"
    ("crash_signal", C, "GGML_ASSERT: /src/llama.cpp/ggml.c:5120: ne2 % ne02 == 0"),
    # engine_dead -- Ray when an actor's constructor raised (a Serve replica that never came up)
    ("engine_dead", C, ("(pid=4242) 2025-01-01 10:00:00,000\tERROR worker.py:400 -- Exception raised in creation task: The "
                        "actor died because of an error raised in its creation task, ray::ServeReplica:LLM.__init__()")),
    # model_load_failure -- KServe's model server when the storage initializer left no model file
    ("model_load_failure", C, "ERROR:root:fail to locate model file for model iris under dir /mnt/models,trying loading from model repository."),
    # cuda_oom -- PyTorch's allocator message when a console (rich's log handler) wrapped "CUDA" onto the line before
    ("cuda_oom", C, "         out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 23.65 GiB of which"),
    # cpu_oom -- Ray's memory monitor (ray < 2.2) refusing a task on a node past its memory threshold
    ("cpu_oom", C, ("ray._private.memory_monitor.RayOutOfMemoryError: More than 95% of the memory on node worker-3 is used "
                    "(30.1 / 31.4 GB). The top 10 memory consumers are:")),
    # nccl_timeout -- NCCL's own warning that a CUDA call inside it failed (the communicator cannot be built)
    ("nccl_timeout", C, "gpu-node-2:4242:4300 [3] transport/nvls.cc:160 NCCL WARN Cuda failure 2 'out of memory'"),
    # nonfinite_message -- SpeechBrain's check_gradients once its non-finite-loss patience is used up
    ("nonfinite_message", E, "ValueError: Loss is not finite and patience is exhausted. To debug, wrap `fit()` with autograd"),
    # model_load_failure -- gunicorn (mlflow models serve, Flask/FastAPI model servers) when the app fails to import
    ("model_load_failure", C, "[2025-01-01 10:00:00 +0000] [4242] [ERROR] Exception in worker process"),
    ("model_load_failure", C, "[2025-01-01 10:00:00 +0000] [4242] [INFO] Worker failed to boot."),
    # model_load_failure -- MLServer logs the failed load at INFO and drops the model from its registry
    ("model_load_failure", C, "2025-01-01 10:00:00,000 [mlserver] INFO - Couldn't load model 'sentiment'. Model will be removed from registry."),
    # engine_dead -- Ollama respawning its llama.cpp runner after it crashed
    ("engine_dead", C, 'time=2025-01-01T10:00:00.000Z level=WARN source=server.go:120 msg="server crash 3 - exit code 2 - respawning"'),
    # oom_killer -- the shell's "Killed" glued to a progress line the program left without a newline
    ("oom_killer", C, "1024/60000 [>.............................] - ETA: 310s - loss: 0.9812Killed"),
    ("oom_killer", C, " 45%|████▌     | 450/1000 [01:02<01:16,  7.19it/s]Killed"),
    # http_5xx -- uvicorn protocols/http (ASGI exception), gunicorn workers/base.py, Flask app.log_exception, gin's
    # logger (Ollama), the openai client's APIStatusError text, JSON and key=value access logs
    ("http_5xx", W, "ERROR:    Exception in ASGI application"),
    ("http_5xx", W, "[2024-06-01 10:00:00 +0000] [12] [ERROR] Error handling request /v1/predict"),
    ("http_5xx", W, "[2024-06-01 10:00:00,000] ERROR in app: Exception on /predict [POST]"),
    # BentoML's API server (the same words as Flask's, with its own prefix)
    ("http_5xx", W, "2025-01-01T10:00:00+0000 [ERROR] [api_server:3] Exception on /classify [POST] (trace=0,span=0)"),
    ("http_5xx", W, '[GIN] 2024/06/01 - 10:00:00 | 500 |  1.204511ms |       127.0.0.1 | POST     "/api/chat"'),
    ("http_5xx", W, "openai.InternalServerError: Error code: 502 - {'error': {'message': 'bad gateway'}}"),
    ("http_5xx", W, '{"ts": "2024-06-01T10:00:00Z", "method": "POST", "path": "/v1/embeddings", "status": 503}'),
    # Envoy's 503 bodies (source/common/router/router.cc, upstream/cluster_manager_impl.cc), as a client or a gateway
    # access log quotes them in front of KServe / Knative / Istio model servers
    ("http_5xx", W, ("requests.exceptions.HTTPError: 503 body: upstream connect error or disconnect/reset before headers. "
                     "reset reason: connection failure")),
    ("http_5xx", W, "curl: got 'no healthy upstream' from http://llm.default.svc.cluster.local/v1/completions"),
    ("http_5xx", W, "request done method=POST path=/generate status_code=500 duration=0.2"),
    # KServe's timing log tags the request with its status (http_status:500)
    ("http_5xx", W, ("2025-01-01 10:00:00.000 12 root INFO [timing():49] kserve.io.kserve.protocol.rest.v1_endpoints.predict "
                     "0.0021, ['http_status:500', 'http_method:POST', 'time:wall']")),
    # nccl_timeout -- NCCL's socket layer when the peer went away (misc/socket.cc, proxy.cc)
    ("nccl_timeout", C, "node7:1234:1250 [0] misc/socket.cc:50 NCCL WARN socketProgress: Connection closed by remote peer node8<4242>"),
    ("nccl_timeout", C, "node7:1234:1250 [0] proxy.cc:1150 NCCL WARN Socket recv failed while polling for opId=0x7f00aa00"),
    # startup_stall -- ray serve deployment_state.py (scheduling), the kubernetes scheduler's events, image pulls
    ("startup_stall", W, ("WARNING deployment_state.py:1986 - Deployment 'LLM' in application 'default' has 1 replicas "
                          "that have taken more than 30s to be scheduled.")),
    ("startup_stall", W, ("  Warning  FailedScheduling  3m (x7 over 9m)  default-scheduler  0/4 nodes are available: 4 "
                          "Insufficient nvidia.com/gpu.")),
    ("startup_stall", W, "llm-server-5d8f-abcde   0/1     ImagePullBackOff   0          4m"),
    # job_cancelled -- PBS (pbs_mom), LSF, slurm without the host part
    ("job_cancelled", C, "=>> PBS: job killed: walltime 3624 exceeded limit 3600"),
    ("job_cancelled", C, "TERM_RUNLIMIT: job killed after reaching LSF run time limit."),
    ("job_cancelled", C, "slurmstepd: error: *** JOB 4711 CANCELLED AT 2024-06-01T10:00:00 DUE TO TIME LIMIT ***"),
    # cuda_error -- the CUDA driver API's error names (cuda.h), as a runtime or a virtual-GPU layer prints them
    ("cuda_error", C, "[ERROR] cuCtxSynchronize failed with CUDA_ERROR_INVALID_CONTEXT (201)"),
    ("cuda_error", C, "RuntimeError: cuModuleLoadData returned CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
    # cuda_oom -- engines that size their KV cache up front (TensorRT-LLM's executor) and XLA's allocator (JAX)
    ("cuda_oom", C, "[TRT-LLM] [RANK 0] [E] Executor creation failed due to insufficient GPU memory."),
    ("cuda_oom", C, "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes."),
    ("cuda_oom", C, "of memory while trying to allocate 268435456 bytes."),
    # cpu_oom -- TensorFlow's BFC allocator when the tensor was to live on the CPU (the host's memory)
    ("cpu_oom", C, ("ResourceExhaustedError: OOM when allocating tensor with shape[64,3,1024,1024] and type float on "
                    "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu")),
    # model_load_failure -- OpenVINO Model Server's model manager (spdlog format) when the device compile fails
    ("model_load_failure", C, ("[2025-01-01 10:00:00.000][12][modelmanager][error][modelinstance.cpp:800] Cannot compile "
                               "model into target device; error: Exception from src/inference/src/core.cpp:100")),
    ("model_load_failure", C, "[2025-01-01 10:00:00.000][12][serving][error][modelmanager.cpp:100] Error occurred while loading model: resnet"),
    # http_5xx -- a structured (zap, JSON) client log of the model's answer
    ("http_5xx", W, '{"level":"info","ts":1700000000.1,"logger":"RestClient","msg":"httpPost failed","response code":503}'),
    # startup_stall -- a serving front end that gave up waiting for its model runner
    ("startup_stall", W, "[WARNING] [api_server:svc:1] Timed out waiting for runner to be ready"),
    # checkpoint_save_failure -- (Lua) Torch's disk file writer on a short write
    ("checkpoint_save_failure", C, "torch/File.lua:210: write error: wrote 1024 blocks instead of 4096 at torch/lib/TH/THDiskFile.c:353"),
    # nccl_timeout -- Horovod's stall inspector (common/stall_inspector.cc), the first half of its wrapped message
    ("nccl_timeout", C, ("[1,0]<stderr>:[2020-01-01 10:00:00.000000: W horovod/common/stall_inspector.cc:105] One or more "
                         "tensors were submitted to be reduced, gathered or broadcasted by subset of ranks and are wai")),
    # model_load_failure -- the weights never arrived (a model download, the Hub unreachable)
    ("model_load_failure", C, "ERROR 2025-01-01 10:00:00 loader.py:88] Failed to download model files: connection reset"),
    ("model_load_failure", C, ("OSError: We couldn't connect to 'https://huggingface.co' to load this file, couldn't find it "
                               "in the cached files and it looks like org/model is not the path to a directory")),
    # fp16_overflow -- icefall's AMP grad scale: tiny (a scale below 1 is a collapse) and the run giving up
    ("fp16_overflow", C, "2024-01-01 10:00:00,000 WARNING [train.py:1000] (0/4) Grad scale is small: 3.5e-20"),
    ("fp16_overflow", C, "RuntimeError: grad_scale is too small, exiting: 1.0e-20"),
]


@pytest.mark.parametrize("signature,severity,line", FRAMEWORK_FORMATS)
def test_framework_message_formats(signature, severity, line):
    found = run([line])
    assert [(f.signature, f.severity) for f in found][:1] == [(signature, severity)], found


@pytest.mark.parametrize("signature,severity,line", FRAMEWORK_FORMATS)
def test_framework_message_formats_through_the_text_monitor(signature, severity, line):
    from runwatch.models.text.monitor import TextMonitor

    _, findings = TextMonitor("formats").observe_lines([line])
    assert f"log/{signature}" in {f.metric for f in findings}, findings


HEALTHY_LOOKALIKES = [
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,max_split_size_mb:512",
    "x = torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4)",
    "--fp16 True --bf16 False --gradient_checkpointing True --deepspeed ds_z3.json",
    "epoch 2 finished: skipped 0 steps (gradient overflow), loss scale 65536",
    "| epoch 003 | loss 3.21 | OOM: 0 | loss_scale: 65536 | wps 1210",
    "{'train_runtime': 120.0, 'loss_scale': 65536.0, 'epoch': 1.0}",
    "[INFO|trainer.py:3000] 2024-06-01 10:00:00 >> Saving model checkpoint to /ckpt/checkpoint-2000",
    "reaper: Killed 0 processes, 0 zombies",
    "metrics: error_rate=0.0 p99_ms=41 timeouts=0",
    '10.0.0.5 - - [01/Jun/2024:10:00:00 +0000] "POST /v1/chat/completions HTTP/1.1" 200 5021 "-" "curl/8.0"',
    '[GIN] 2024/06/01 - 10:00:00 | 200 |  2.310412ms |       127.0.0.1 | POST     "/api/generate"',
    '{"method": "POST", "path": "/v1/embeddings", "status": 200, "latency_ms": 500}',
    "request done method=GET path=/metrics status_code=200 duration=0.01",
    "openai request ok, status=200, took 500ms",
    "gpu12:881:881 [1] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB ; OOB ib0:10.2.0.12<0>",
    "gpu12:881:881 [1] NCCL INFO comm 0x55d0 rank 1 nranks 8 cudaDev 1 busId 41000 - Init COMPLETE",
    "[I ProcessGroupNCCL.cpp:686] [Rank 0] ProcessGroupNCCL initialization options: TIMEOUT(ms): 1800000",
    "[I reducer.cpp:1300] Reducer buckets have been rebuilt in this iteration.",
    "trainer-1 exited with code 0",
    "      Exit Code:    0",
    "  exitcode  : 0 (pid: 1234)",
    "INFO  heartbeat ok, next in 30s",
    "Worker proc VllmWorker-1 started.",
    "INFO Model architectures ['LlamaForCausalLM'] are supported",
    "Replica(id='x1y2', deployment='LLM') started; health check passed",
    "  Normal   Scheduled  1m    default-scheduler  Successfully assigned default/llm-0 to node-3",
    "INFO:     Application startup complete.",
    "INFO 06-01 10:00:00 [gpu_model_runner.py:1500] Model loading took 14.9 GiB and 12.1 seconds",
    "checkpoint saved to /ckpt/step_1000 (2.1 GB), free memory 40.2 GiB",
    "inference done: 128 requests, 0 errors, information retained",
    "Detected information about 8 GPUs; inferring topology",
    "val loss went to 0.41 from 0.44 after the lr drop",
    "upstream connected: 4 healthy upstreams for cluster llm",
]


def test_healthy_lookalikes_raise_nothing():
    from runwatch.models.text.monitor import TextMonitor

    for line in HEALTHY_LOOKALIKES:
        assert run([line]) == [], line
        _, findings = TextMonitor("lookalikes").observe_lines([line])
        assert not [f for f in findings if f.metric.startswith("log/")], (line, findings)


def test_uvicorn_exception_line_is_a_5xx_and_its_traceback_still_one_finding():
    lines = [
        "ERROR:    Exception in ASGI application",
        "Traceback (most recent call last):",
        '  File "/app/server.py", line 40, in predict',
        "    out = model(x)",
        "ValueError: bad input shape",
    ]
    found = run(lines)
    assert [(f.signature, f.severity, f.line) for f in found] == [
        ("http_5xx", Severity.WARNING, 0), ("python_exception", Severity.ERROR, 1)]


def test_overflow_abort_wins_over_floating_point_error_in_a_traceback():
    # fairseq's fp16 optimizer raises FloatingPointError when the scaler gives up: the scaler is the story
    lines = [
        "Traceback (most recent call last):",
        '  File "fairseq/trainer.py", line 900, in train_step',
        "    self.optimizer.step()",
        "FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding.",
    ]
    [f] = run(lines)
    assert (f.signature, f.severity) == ("fp16_overflow", Severity.CRITICAL)


def test_paddle_scale_is_read_and_escalates():
    found = run([f"Found inf or nan, current scale is: {s}, decrease to: {s}*0.5" for s in (64.0, 8.0, 1.0)])
    assert [(f.severity, f.value) for f in found] == [(Severity.INFO, 32.0), (Severity.WARNING, 4.0),
                                                       (Severity.CRITICAL, 0.5)]
