"""GPU backends behind one interface (:mod:`node_agent.gpu.backend`): NVML for real GPUs,
emulation for the sandbox's device-file GPUs."""
