# `make images` builds the catalog's images from templates_app/images/<slug>/ where a
# registry is reachable (the base images are pulled). The tags are the `image` of each
# entry in templates_app/catalog.py; tests/access/test_images.py checks that they agree.
# `make push REGISTRY=registry.example.com:5000` builds them and pushes each as
# $(REGISTRY)/<its tag>; point the templates' images there (admin -> Templates) and the
# workers pull them on first launch (README, "Images and registries").
# `make test-image` builds the local CI image that runs the same start scripts.

DOCKER ?= docker
IMAGES_DIR := templates_app/images
SLUGS := pytorch tensorflow comfyui vllm stable-diffusion base-cuda

IMAGE_pytorch := gpucloud/pytorch:2-cuda12
IMAGE_tensorflow := gpucloud/tensorflow:latest-gpu
IMAGE_comfyui := gpucloud/comfyui:latest
IMAGE_vllm := gpucloud/vllm-openai:latest
IMAGE_stable-diffusion := gpucloud/stable-diffusion-forge:latest
IMAGE_base-cuda := gpucloud/cuda:12-devel

ifneq ($(filter push push-%,$(MAKECMDGOALS)),)
ifeq ($(REGISTRY),)
$(error usage: make push REGISTRY=registry.example.com:5000)
endif
endif

.PHONY: images push test-image $(addprefix image-,$(SLUGS)) $(addprefix push-,$(SLUGS))

images: $(addprefix image-,$(SLUGS))

$(addprefix image-,$(SLUGS)): image-%:
	$(DOCKER) build --pull -f $(IMAGES_DIR)/$*/Dockerfile -t $(IMAGE_$*) $(IMAGES_DIR)

push: $(addprefix push-,$(SLUGS))

$(addprefix push-,$(SLUGS)): push-%: image-%
	$(DOCKER) tag $(IMAGE_$*) $(REGISTRY)/$(IMAGE_$*)
	$(DOCKER) push $(REGISTRY)/$(IMAGE_$*)

test-image:
	scripts/build-test-image

# requirements.lock (what scripts/run installs) from requirements.txt: every package pinned.
.PHONY: lock
lock:
	.venv/bin/uv pip compile requirements.txt --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--custom-compile-command "make lock" -o requirements.lock
