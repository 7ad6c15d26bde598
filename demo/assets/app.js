// tusgate demo page: uploads the picked file with tus-js-client (resumable,
// fingerprint kept in localStorage), follows the gateway's status events
// for the api.video leg, and shows what the emulator received.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const endpoint = new URL(
    document.querySelector('meta[name="tusgate-endpoint"]').content || "/files/",
    location.href,
  ).href;
  const pollEvery = 400; // ms between status polls (without the event stream)
  const hashLimit = 512 * 1024 * 1024; // hash files up to this size in the page

  const ui = {
    file: $("file"),
    name: $("file-name"),
    pause: $("pause"),
    toGateway: $("to-gateway"),
    toGatewayText: $("to-gateway-text"),
    toAPIVideo: $("to-apivideo"),
    toAPIVideoText: $("to-apivideo-text"),
    status: $("status"),
    result: $("result"),
    videoId: $("video-id"),
    playerURL: $("player-url"),
    received: $("received"),
  };
  $("endpoint").textContent = endpoint;

  let current = null; // {file, upload, running, sent, stop}

  function formatBytes(n) {
    if (n == null) return "?";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    let v = n;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i++;
    }
    return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.className = "status" + (kind ? " " + kind : "");
  }

  function setBar(bar, label, done, total, extra) {
    bar.max = total || 1;
    bar.value = Math.min(done, total || 0);
    const pct = total ? Math.floor((done / total) * 100) : 0;
    label.textContent = pct + "% · " + formatBytes(done) + (extra ? " · " + extra : "");
  }

  async function mintToken() {
    const res = await fetch("/demo/token", { method: "POST" });
    if (!res.ok) throw new Error("could not get an upload token (" + res.status + ")");
    return res.json();
  }

  function uploadID(uploadURL) {
    return new URL(uploadURL, endpoint).pathname.split("/").filter(Boolean).pop();
  }

  // followStatus follows the upload's status: the gateway's server-sent
  // events (GET /uploads/{id}/events, event "status" on every change, "end"
  // at a final state), or, where the stream is unavailable, polling
  // GET /uploads/{id}.
  function followStatus(job, uploadURL) {
    const base = new URL("/uploads/" + encodeURIComponent(uploadID(uploadURL)), endpoint).href;
    if (!window.EventSource) {
      pollStatus(job, base);
      return;
    }
    const es = new EventSource(base + "/events");
    let seen = false;
    job.stop = () => es.close();
    es.addEventListener("status", (ev) => {
      if (job !== current) return es.close();
      seen = true;
      showStatus(job, JSON.parse(ev.data));
    });
    es.addEventListener("end", () => es.close());
    es.addEventListener("error", () => {
      // Before any event: no stream here (an older gateway): poll instead.
      // After one, EventSource reconnects by itself.
      if (!seen) {
        es.close();
        pollStatus(job, base);
      }
    });
  }

  function pollStatus(job, statusURL) {
    let timer = null;
    job.stop = () => clearTimeout(timer);
    const tick = async () => {
      if (job !== current) return;
      try {
        const res = await fetch(statusURL, { cache: "no-store" });
        if (res.ok) {
          const st = await res.json();
          showStatus(job, st);
          if (st.state === "delivered" || st.state === "failed" || st.state === "terminated") return;
        }
      } catch (err) {
        // The gateway is unreachable for now: keep polling.
      }
      timer = setTimeout(tick, pollEvery);
    };
    tick();
  }

  function showStatus(job, st) {
    const total = st.size ?? job.file.size;
    const parts = st.parts && st.parts.total != null
      ? st.parts.delivered + " of " + st.parts.total + " parts"
      : (st.parts ? st.parts.delivered : 0) + " parts";
    setBar(ui.toAPIVideo, ui.toAPIVideoText, st.delivered, total, parts);
    switch (st.state) {
      case "delivered":
        ui.pause.disabled = true;
        setStatus("Delivered: api.video has every part of the video.", "ok");
        showResult(job, st);
        break;
      case "failed":
        ui.pause.disabled = true;
        setStatus("Failed: " + (st.error ? st.error.reason + ": " + st.error.message : "unknown error"), "bad");
        break;
      case "terminated":
        setStatus("The upload was terminated.", "bad");
        break;
      default:
        if (!job.running && !job.sent) setStatus("Paused. Press Resume to go on.");
        else if (job.sent) setStatus("All bytes are at the gateway; forwarding the rest to api.video…");
        else setStatus("Uploading to the gateway; the gateway forwards each part to api.video as soon as it has it…");
    }
  }

  async function showResult(job, st) {
    ui.result.hidden = false;
    ui.videoId.textContent = st.videoId;
    ui.playerURL.textContent = (st.assets && st.assets.player) || "";
    ui.received.textContent = "checking…";
    try {
      const res = await fetch("/demo/videos/" + encodeURIComponent(st.videoId), { cache: "no-store" });
      if (!res.ok) throw new Error("emulator answered " + res.status);
      const v = await res.json();
      const sum = document.createElement("span");
      sum.className = "nowrap";
      sum.textContent = "SHA-256 " + v.sha256.slice(0, 16) + "…";
      const verdict = document.createElement("span");
      ui.received.replaceChildren(
        formatBytes(v.size) + " (" + v.size.toLocaleString("en-US") + " bytes) in " +
          v.parts + " part" + (v.parts === 1 ? "" : "s") + ", ",
        sum,
        " ",
        verdict,
      );
      if (job.file.size > hashLimit || !(window.crypto && crypto.subtle)) return;
      const local = await sha256Hex(job.file);
      if (local === v.sha256) {
        verdict.className = "match";
        verdict.textContent = "identical to your file ✓";
      } else {
        verdict.className = "mismatch";
        verdict.textContent = "differs from your file (" + local.slice(0, 16) + "…)";
      }
    } catch (err) {
      ui.received.textContent = "could not ask the emulator: " + err.message;
    }
  }

  // describe turns a tus-js-client error into a sentence: the gateway's
  // answer when there is one (its body says what is wrong), else the
  // client's message (e.g. the network is down).
  function describe(err) {
    const res = err.originalResponse;
    const status = res ? res.getStatus() : 0;
    if (status) return "the gateway answered " + status + ": " + (res.getBody() || "").trim();
    return err.message;
  }

  async function sha256Hex(blob) {
    const sum = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
    return Array.from(new Uint8Array(sum), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function start(file) {
    if (current) {
      if (current.upload) current.upload.abort();
      current.stop();
    }
    const job = { file, running: false, sent: false, stop: () => {}, upload: null };
    current = job;
    ui.result.hidden = true;
    ui.name.textContent = file.name + " · " + formatBytes(file.size);
    setBar(ui.toGateway, ui.toGatewayText, 0, file.size);
    setBar(ui.toAPIVideo, ui.toAPIVideoText, 0, file.size);
    setStatus("Getting an upload token…");

    let token;
    try {
      token = await mintToken();
    } catch (err) {
      setStatus(err.message, "bad");
      return;
    }
    const metadata = { filename: file.name, token: token.token, tokenExpiresAt: token.expiresAt };
    if (file.type) metadata.filetype = file.type;

    const upload = new tus.Upload(file, {
      endpoint,
      metadata,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      removeFingerprintOnSuccess: true,
      onUploadUrlAvailable() {
        followStatus(job, upload.url);
      },
      onProgress(sent, total) {
        if (job !== current) return;
        setBar(ui.toGateway, ui.toGatewayText, sent, total);
      },
      onSuccess() {
        if (job !== current) return;
        job.sent = true;
        ui.pause.disabled = true;
        setBar(ui.toGateway, ui.toGatewayText, file.size, file.size);
      },
      onError(err) {
        if (job !== current) return;
        job.running = false;
        ui.pause.disabled = true;
        setStatus("Upload failed: " + describe(err), "bad");
      },
    });
    job.upload = upload;

    const previous = await upload.findPreviousUploads();
    if (previous.length > 0) {
      upload.resumeFromPreviousUpload(previous[0]);
      setStatus("Found an earlier upload of this file: resuming it where it stopped…");
    } else {
      setStatus("Uploading to the gateway…");
    }
    job.running = true;
    ui.pause.disabled = false;
    ui.pause.textContent = "Pause";
    upload.start();
  }

  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    if (file) start(file);
  });

  ui.pause.addEventListener("click", () => {
    const job = current;
    if (!job || !job.upload) return;
    if (job.running) {
      job.running = false;
      job.upload.abort();
      ui.pause.textContent = "Resume";
      setStatus("Paused. Press Resume to go on.");
    } else {
      job.running = true;
      job.upload.start();
      ui.pause.textContent = "Pause";
      setStatus("Resuming from the gateway's offset…");
    }
  });
})();
