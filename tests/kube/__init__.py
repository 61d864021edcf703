"""A Kubernetes API for the integration tests: an emulator on kmock 0.8 with the fidelity kopf and
hetplace rely on (see `emulator`), or a real test cluster when HETPLACE_TEST_KUBECONFIG is set.

- `fixtures`: the `kube` and `run_operator` pytest fixtures;
- `cluster`: what a test holds (`Cluster`: object methods, kubeconfig, `wait_for`, fault controls);
- `operators`: kopf operators in their own threads, logging in through `register_login`;
- `emulator`, `server`, `patches`, `selectors`, `catalogue`: the emulator itself.
"""
