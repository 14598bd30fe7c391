// Upload a file with progress (XHR exposes upload progress; fetch does not).
"use strict";

TF.upload = function (file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("purpose", purpose);  // before the file, so the server checks it before the bytes
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/ui/api/files");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(new Error((xhr.response && xhr.response.error && xhr.response.error.message) || `Upload failed (${xhr.status})`));
    };
    xhr.onerror = () => reject(new Error("Upload failed: the connection was interrupted."));
    xhr.send(form);
  });
};

// Wire a hidden <input type=file data-upload-for=ID> to upload into select#ID with a progress bar.
TF.bindUploads = function (onUploaded) {
  for (const input of document.querySelectorAll("[data-upload-for]")) {
    input.addEventListener("change", async () => {
      const target = input.dataset.uploadFor;
      const file = input.files[0];
      if (!file) return;
      const bar = document.querySelector(`[data-progress-for="${target}"]`);
      const err = document.querySelector(`[data-error-for="${target}"]`);
      bar.hidden = false; err.textContent = "";
      try {
        const obj = await TF.upload(file, "fine-tune", (f) => { bar.firstElementChild.style.width = `${Math.round(f * 100)}%`; });
        for (const sel of document.querySelectorAll("select#training_file, select#validation_file")) {
          sel.append(TF.el("option", { value: obj.id }, `${obj.filename} · ${obj.id}`));
        }
        document.getElementById(target).value = obj.id;
        if (onUploaded) onUploaded(target, obj);
      } catch (e) {
        err.textContent = e.message;
      } finally {
        bar.hidden = true; bar.firstElementChild.style.width = "0";
        input.value = "";
      }
    });
  }
};
