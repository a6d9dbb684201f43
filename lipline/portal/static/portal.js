// Lipline portal: uploads with a progress bar (XHR), live job state (polling). Plain JS, no build step.
"use strict";

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

function uploadFile(draft, role, file) {
  const bar = document.getElementById("progress-" + role);
  const status = document.getElementById("status-" + role);
  const xhr = new XMLHttpRequest();
  xhr.open("PUT", "/api/drafts/" + draft + "/" + role);
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name));
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  bar.value = 0;
  status.className = "status";
  status.textContent = "uploading " + file.name + " …";
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = {error: xhr.statusText}; }
    if (xhr.status === 200) {
      bar.value = 1;
      status.textContent = body.name + " (" + (body.size / 1024).toFixed(1) + " KB) uploaded";
      status.classList.add("ok");
    } else {
      bar.value = 0;
      status.textContent = body.error || ("upload failed: HTTP " + xhr.status);
      status.classList.add("refused");
    }
  };
  xhr.onerror = () => { status.textContent = "upload failed: the connection broke"; status.classList.add("refused"); };
  xhr.send(file);
}

function setupUploads() {
  const box = document.getElementById("uploads");
  if (!box) return;
  box.querySelectorAll(".upload").forEach((row) => {
    const input = row.querySelector("input[type=file]");
    input.addEventListener("change", () => {
      if (input.files.length) uploadFile(box.dataset.draft, row.dataset.role, input.files[0]);
    });
  });
}

function updateRow(row, job) {
  row.querySelector(".state").textContent = job.state;
  row.querySelector(".state").className = "state state-" + job.state.toLowerCase();
  row.querySelector(".stage").textContent = job.stage;
  row.querySelector("progress").value = job.progress;
  row.querySelector(".message").textContent = job.message;
}

function pollJobs() {
  const table = document.getElementById("jobs");
  if (!table) return;
  setInterval(async () => {
    const resp = await fetch(table.dataset.poll, {headers: {Accept: "application/json"}});
    if (!resp.ok) return;
    for (const job of await resp.json()) {
      const row = table.querySelector('tr[data-job="' + job.job_id + '"]');
      if (row) updateRow(row, job); else { location.reload(); return; }
    }
  }, 2000);
}

function pollJob() {
  const box = document.getElementById("job");
  if (!box || box.dataset.done === "yes") return;
  const timer = setInterval(async () => {
    const resp = await fetch(box.dataset.poll, {headers: {Accept: "application/json"}});
    if (!resp.ok) return;
    const job = await resp.json();
    document.getElementById("job-state").textContent = job.state;
    document.getElementById("job-stage").textContent = job.stage;
    document.getElementById("job-progress").value = job.progress;
    document.getElementById("job-message").textContent = job.message;
    if (job.done) { clearInterval(timer); location.reload(); }
  }, 1500);
}

function setupPlayers() {
  const both = document.getElementById("play-both");
  if (!both) return;
  const a = document.getElementById("original"), b = document.getElementById("result");
  both.addEventListener("click", () => { a.currentTime = 0; b.currentTime = 0; a.play(); b.play(); });
}

document.addEventListener("DOMContentLoaded", () => { setupUploads(); pollJobs(); pollJob(); setupPlayers(); });
