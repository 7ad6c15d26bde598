// harness.js: runs one upload scenario in the page, from the query string,
// and records everything in window.harness for integration/browser_test.go.
//
//   mode      tus (tus-js-client) or uppy (@uppy/core + @uppy/tus)
//   endpoint  the tus creation URL
//   token     the api.video upload token (tus metadata "token")
//   seed      seed of the file's bytes (xorshift32, see makeBytes)
//   size      the file's size in bytes
//   chunk     PATCH size (optional; default: the whole rest in one PATCH)
//   name      the file name (default video.mp4)
//
// The same URL on a reload runs again: tus-js-client then finds the
// previous upload of the same file by its fingerprint in localStorage.
"use strict";

const h = (window.harness = {
  state: "starting", // starting, uploading, sent, delivered, failed, error
  mode: null,
  resumed: false,
  previous: [], // upload URLs found by fingerprint
  uploadURL: null,
  progress: 0,
  requests: [], // {method, url, offset}
  responses: [], // {request (index), method, url, status, location, offset, length, tusResumable}
  statusPolls: 0,
  status: null, // last GET /uploads/{id} body
  error: null,
});

// makeBytes returns size bytes of xorshift32 from seed: the low byte of
// each state. The Go test makes the same bytes (browserBytes).
function makeBytes(seed, size) {
  const out = new Uint8Array(size);
  let x = seed | 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

// requestIndex maps tus-js-client's request objects (the same object goes
// to onBeforeRequest and onAfterResponse) to their index in h.requests.
const requestIndex = new WeakMap();

function onBeforeRequest(req) {
  requestIndex.set(req, h.requests.length);
  h.requests.push({ method: req.getMethod(), url: req.getURL(), offset: req.getHeader("Upload-Offset") ?? null });
}

function onAfterResponse(req, res) {
  h.responses.push({
    request: requestIndex.get(req) ?? -1,
    method: req.getMethod(),
    url: req.getURL(),
    status: res.getStatus(),
    location: res.getHeader("Location") ?? null,
    offset: res.getHeader("Upload-Offset") ?? null,
    length: res.getHeader("Upload-Length") ?? null,
    tusResumable: res.getHeader("Tus-Resumable") ?? null,
  });
}

// pollStatus follows GET /uploads/{id} (on the endpoint's origin, so
// cross-origin pages exercise the status API's CORS) until a final state.
async function pollStatus(endpoint) {
  const id = new URL(h.uploadURL).pathname.split("/").filter(Boolean).pop();
  const statusURL = new URL("/uploads/" + id, endpoint).href;
  for (;;) {
    try {
      const res = await fetch(statusURL, { cache: "no-store" });
      h.statusPolls++;
      if (res.ok) {
        h.status = await res.json();
        if (h.status.state === "delivered" || h.status.state === "failed" || h.status.state === "terminated") {
          h.state = h.status.state === "delivered" ? "delivered" : "failed";
          return;
        }
      }
    } catch (err) {
      h.error = "status: " + err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function runTus(p, file) {
  const upload = new tus.Upload(file, {
    endpoint: p.endpoint,
    chunkSize: p.chunk || Infinity,
    retryDelays: [0, 200, 500, 1000, 1000, 2000, 3000],
    metadata: { filename: file.name, filetype: file.type, token: p.token },
    onBeforeRequest,
    onAfterResponse,
    onUploadUrlAvailable() {
      h.uploadURL = upload.url;
    },
    onProgress(sent) {
      h.progress = sent;
    },
    onSuccess() {
      h.state = "sent";
      pollStatus(p.endpoint);
    },
    onError(err) {
      h.state = "error";
      h.error = String(err);
    },
  });
  const previous = await upload.findPreviousUploads();
  h.previous = previous.map((u) => u.uploadUrl);
  if (previous.length > 0) {
    upload.resumeFromPreviousUpload(previous[0]);
    h.resumed = true;
  }
  h.state = "uploading";
  upload.start();
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error("could not load " + src));
    document.head.append(el);
  });
}

async function runUppy(p, file) {
  await loadScript("/build/uppy.js");
  const { Uppy, Tus } = window.UppyBundle;
  const uppy = new Uppy({ autoProceed: false }).use(Tus, {
    endpoint: p.endpoint,
    chunkSize: p.chunk || Infinity,
    retryDelays: [0, 200, 500, 1000],
    onBeforeRequest,
    onAfterResponse,
  });
  uppy.on("upload-progress", (_, progress) => {
    h.progress = progress.bytesUploaded;
  });
  uppy.addFile({ name: file.name, type: file.type, data: file, meta: { token: p.token } });
  h.state = "uploading";
  const result = await uppy.upload();
  if (!result || result.failed.length > 0 || result.successful.length !== 1) {
    h.state = "error";
    h.error = "uppy: " + JSON.stringify(result && result.failed.map((f) => String(f.error)));
    return;
  }
  h.uploadURL = result.successful[0].uploadURL;
  h.state = "sent";
  pollStatus(p.endpoint);
}

(async () => {
  const q = new URLSearchParams(location.search);
  const p = {
    mode: q.get("mode"),
    endpoint: q.get("endpoint"),
    token: q.get("token"),
    chunk: Number(q.get("chunk")) || 0,
  };
  h.mode = p.mode;
  const bytes = makeBytes(Number(q.get("seed")), Number(q.get("size")));
  const file = new File([bytes], q.get("name") || "video.mp4", { type: "video/mp4", lastModified: 1700000000000 });
  try {
    if (p.mode === "tus") await runTus(p, file);
    else if (p.mode === "uppy") await runUppy(p, file);
    else throw new Error("unknown mode " + p.mode);
  } catch (err) {
    h.state = "error";
    h.error = String(err && err.stack ? err.stack : err);
  }
})();
