// The ferjax page: send a photo to /v1/predict or webcam frames to /v1/stream, draw
// what comes back.
"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const video = $("video"), status = $("status"), list = $("faces");
let streaming = null;

function say(text, isError) {
  status.textContent = text;
  status.classList.toggle("error", !!isError);
}

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function predict(blob) {
  const form = new FormData();
  form.append("file", blob, "image");
  const r = await fetch("v1/predict", { method: "POST", body: form, headers: headers() });
  const body = await r.json().catch(() => ({ error: "the server sent no JSON" }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function draw(source, result) {
  const w = result.width, h = result.height;
  canvas.width = w; canvas.height = h;
  ctx.drawImage(source, 0, 0, w, h);
  const line = Math.max(2, Math.round(Math.max(w, h) / 300));
  result.faces.forEach((f, i) => {
    const [x0, y0, x1, y1] = f.box;
    ctx.lineWidth = line;
    const colour = f.uncertain ? "#aaaaaa" : "#ffc800";  // grey: not sure
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const size = Math.max(12, Math.round((x1 - x0) / 6));
    ctx.font = `600 ${size}px system-ui, sans-serif`;
    const mark = f.uncertain ? "?" : "";
    const who = f.track !== undefined && f.track !== null ? `#${f.track} ` : `${i + 1}. `;
    const text = `${who}${f.label}${mark} ${f.score.toFixed(2)}`;
    const tw = ctx.measureText(text).width;
    const ty = Math.max(0, y0 - size - 2 * line);
    ctx.fillStyle = colour;
    ctx.fillRect(x0, ty, tw + 8, size + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x0 + 4, ty + size);
  });
  list.replaceChildren(...result.faces.map((f, i) => {
    const li = document.createElement("li");
    if (f.uncertain) li.className = "uncertain";
    const head = document.createElement("div");
    head.className = "label";
    head.textContent = f.uncertain
      ? `${f.label}? (${Math.round(100 * f.score)}%, not sure)`
      : `${f.label} (${Math.round(100 * f.score)}%)`;
    li.append(head);
    if (f.flags && f.flags.length) {
      const flags = document.createElement("div");
      flags.className = "flags";
      flags.textContent = `hard to read: ${f.flags.join(", ").replace(/_/g, " ")}`;
      li.append(flags);
    }
    Object.entries(f.probabilities).forEach(([name, p]) => {
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = `<span></span><span class="track"><span class="fill"></span></span><span></span>`;
      row.children[0].textContent = name;
      row.children[1].firstChild.style.width = `${(100 * p).toFixed(1)}%`;
      row.children[2].textContent = `${Math.round(100 * p)}%`;
      li.append(row);
    });
    return li;
  }));
  document.body.dataset.faces = String(result.faces.length);
}

async function onFile(file) {
  if (!file) return;
  stopCamera();
  say("Analysing " + file.name + " ...");
  try {
    const result = await predict(file);
    const img = await createImageBitmap(file, { imageOrientation: "from-image" });
    draw(img, result);
    say(result.faces.length ? `${result.faces.length} face(s), ${result.ms} ms on the server.`
                            : "No face found in this image.");
  } catch (e) {
    say("Error: " + e.message, true);
  }
}

$("file").addEventListener("change", (e) => onFile(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => onFile(e.dataTransfer.files[0]));

function stopCamera() {
  if (!streaming) return;
  streaming.getTracks().forEach((t) => t.stop());
  streaming = null;
  if (socket) { socket.close(); socket = null; }
  $("camera").textContent = "Start webcam";
  $("camera").classList.remove("on");
}

// Webcam frames go to /v1/stream over a WebSocket; the server follows each face
// (track) and smooths its expression, and answers the newest frame it has, dropping
// the others. At most two frames are in flight, so nothing queues up.
let socket = null, sent = 0, answered = 0, lastGrab = null;

function openStream() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = $("token").value.trim();
  const ws = new WebSocket(`${proto}//${location.host}/v1/stream` +
                           (token ? `?token=${encodeURIComponent(token)}` : ""));
  sent = 0; answered = 0;
  ws.answers = 0;
  ws.onmessage = (event) => {
    const result = JSON.parse(event.data);
    ws.answers += 1;
    answered = ws.answers + result.dropped;  // a dropped frame is never answered
    if (streaming && lastGrab) {
      draw(lastGrab, result);
      say(`Webcam: ${result.faces.length} face(s), ${result.analysed_fps.toFixed(1)} ` +
          `frames analysed a second, ${result.dropped} dropped.`);
    }
  };
  ws.onclose = (event) => {
    if (streaming && socket === ws) {
      say("The stream closed" + (event.reason ? ": " + event.reason : " (is a token " +
          "needed?)"), true);
      stopCamera();
    }
  };
  return ws;
}

async function frameLoop() {
  if (!streaming) return;
  if (socket && socket.readyState === WebSocket.OPEN && sent - answered < 2 &&
      video.videoWidth) {
    const grab = document.createElement("canvas");
    grab.width = video.videoWidth; grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.85));
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(blob);
      sent += 1;
      lastGrab = grab;
    }
  }
  setTimeout(frameLoop, 50);
}

$("camera").addEventListener("click", async () => {
  if (streaming) { stopCamera(); say("Webcam off."); return; }
  try {
    streaming = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (e) {
    say("The webcam cannot be opened: " + e.message, true);
    return;
  }
  video.srcObject = streaming;
  await video.play();
  $("camera").textContent = "Stop webcam";
  $("camera").classList.add("on");
  say("Webcam on.");
  socket = openStream();
  frameLoop();
});

fetch("v1/info", { headers: headers() }).then((r) => r.json()).then((i) => {
  if (i.model) $("model").textContent = `model ${i.model}, ferjax ${i.version}`;
}).catch(() => {});
