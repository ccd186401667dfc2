// Small progressive enhancements: copy buttons, confirmations, the launch estimate.
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const text = copy.getAttribute("data-copy") || document.getElementById(copy.getAttribute("data-copy-from"))?.textContent || "";
    navigator.clipboard?.writeText(text.trim()).then(() => {
      const label = copy.textContent;
      copy.textContent = "Copied";
      setTimeout(() => { copy.textContent = label; }, 1200);
    });
  }
});

document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

function updateEstimate() {
  const form = document.getElementById("launch-form");
  if (!form) return;
  const gpu = form.querySelector("input[name=gpu]:checked");
  const storage = parseInt(form.querySelector("input[name=storage]")?.value || "0", 10);
  const rate = gpu ? parseFloat(gpu.dataset.rate) : 0;
  const storageRate = parseFloat(form.dataset.storageRate || "0");
  const balance = parseFloat(form.dataset.balance || "0");
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  set("est-rate", gpu ? `$${rate.toFixed(2)}/h` : "—");
  set("est-storage", `$${(storage * storageRate).toFixed(2)}/month while stopped`);
  if (rate > 0) {
    const hours = balance / rate;
    set("est-covers", balance > 0 ? (hours >= 48 ? `${Math.floor(hours / 24)} days` : `${hours.toFixed(1)} hours`) : "nothing — top up first");
  }
  const template = form.querySelector("input[name=template]:checked");
  const offered = template ? (template.dataset.access || "").split(",") : [];
  form.querySelectorAll("input[name=access]").forEach((box) => {
    const ok = offered.includes(box.value);
    box.disabled = !ok;
    if (!ok) box.checked = false;
    box.closest("label").classList.toggle("muted", !ok);
  });
  // GPU types with less memory than the template needs (0 = unknown: not judged,
  // as the launch service does); the server refuses them with instances:gpu-too-small.
  const needed = template ? parseInt(template.dataset.minGpuMemory || "0", 10) : 0;
  form.querySelectorAll("input[name=gpu]").forEach((radio) => {
    const memory = parseInt(radio.dataset.memory || "0", 10);
    const mark = radio.closest(".choice")?.querySelector(".too-small");
    if (!mark) return;
    mark.hidden = !(memory && memory < needed);
    mark.textContent = `Too little memory: too small for ${template?.dataset.name || "this template"}`;
  });
}
document.addEventListener("change", updateEstimate);
document.addEventListener("input", updateEstimate);
document.addEventListener("DOMContentLoaded", updateEstimate);
