#!/bin/sh
# vLLM's OpenAI-compatible server (8000) with the access token as its API key; sshd and
# JupyterLab (8888). The model comes from the template's env (VLLM_MODEL, VLLM_ARGS);
# downloaded weights are cached under /workspace so a restart does not fetch them again.
. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
export HF_HOME="${HF_HOME:-/workspace/.cache/huggingface}"
gpucloud_start_jupyter 8888
# The key goes in the environment (VLLM_API_KEY), never on the command line or in logs.
# shellcheck disable=SC2086  # VLLM_ARGS is a list of flags
VLLM_API_KEY="$GPUCLOUD_TOKEN" python3 -m vllm.entrypoints.openai.api_server --host 0.0.0.0 --port 8000 \
    --model "${VLLM_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}" ${VLLM_ARGS:-} &
gpucloud_exec_sshd
