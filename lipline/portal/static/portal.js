// Lipline portal: uploads with a progress bar (XHR; streamed through the portal, or presigned multipart straight
// to S3), live job state (polling). Plain JS, no build step.
"use strict";

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

function showUploaded(role, body) {
  const bar = document.getElementById("progress-" + role);
  const status = document.getElementById("status-" + role);
  bar.value = 1;
  status.className = "status ok";
  status.textContent = body.name + " (" + (body.size / 1024).toFixed(1) + " KB) uploaded";
}

function showRefused(role, message) {
  const status = document.getElementById("status-" + role);
  document.getElementById("progress-" + role).value = 0;
  status.className = "status refused";
  status.textContent = message;
}

// Local store: the file is streamed through the portal in one PUT.
function uploadStreamed(draft, role, file) {
  const bar = document.getElementById("progress-" + role);
  const xhr = new XMLHttpRequest();
  xhr.open("PUT", "/api/drafts/" + draft + "/" + role);
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name));
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = {error: xhr.statusText}; }
    if (xhr.status === 200) showUploaded(role, body);
    else showRefused(role, body.error || ("upload failed: HTTP " + xhr.status));
  };
  xhr.onerror = () => showRefused(role, "upload failed: the connection broke");
  xhr.send(file);
}

async function postJSON(url, body) {
  const resp = await fetch(url, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()}});
  let data = {};
  try { data = await resp.json(); } catch (err) { data = {error: resp.statusText}; }
  if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
  return data;
}

// One slice PUT to its presigned URL; resolves with the part's ETag (the bucket's CORS must expose it).
function putPart(url, blob, onLoaded) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onLoaded(e.loaded); };
    xhr.onload = () => {
      const etag = xhr.getResponseHeader("ETag");
      if (xhr.status === 200 && etag) resolve(etag);
      else reject(new Error(xhr.status === 200 ? "the store hid the part's ETag: its bucket CORS must expose ETag"
                                               : "a part upload failed: HTTP " + xhr.status));
    };
    xhr.onerror = () => reject(new Error("a part upload failed: the store is unreachable from this browser or its "
                                         + "bucket CORS refuses this page"));
    xhr.send(blob);
  });
}

// S3 store: the server starts a multipart upload and presigns each part; the slices go straight to S3.
async function uploadMultipart(draft, role, file) {
  const bar = document.getElementById("progress-" + role);
  const base = "/api/drafts/" + draft + "/" + role + "/multipart";
  try {
    const started = await postJSON(base, {name: file.name, size: file.size});
    const etags = [];
    let sent = 0;
    try {
      for (let i = 0; i < started.parts.length; i++) {
        const blob = file.slice(i * started.part_size, Math.min(file.size, (i + 1) * started.part_size));
        etags.push(await putPart(started.parts[i], blob, (loaded) => { bar.value = (sent + loaded) / file.size; }));
        sent += blob.size;
      }
    } catch (err) {
      postJSON(base + "/abort", {upload_id: started.upload_id}).catch(() => {});
      throw err;
    }
    showUploaded(role, await postJSON(base + "/complete", {upload_id: started.upload_id, etags: etags}));
  } catch (err) {
    showRefused(role, err.message);
  }
}

function uploadFile(box, role, file) {
  const status = document.getElementById("status-" + role);
  document.getElementById("progress-" + role).value = 0;
  status.className = "status";
  status.textContent = "uploading " + file.name + " …";
  if (box.dataset.mode === "multipart") uploadMultipart(box.dataset.draft, role, file);
  else uploadStreamed(box.dataset.draft, role, file);
}

function setupUploads() {
  const box = document.getElementById("uploads");
  if (!box) return;
  box.querySelectorAll(".upload").forEach((row) => {
    const input = row.querySelector("input[type=file]");
    input.addEventListener("change", () => {
      if (input.files.length) uploadFile(box, row.dataset.role, input.files[0]);
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
