// The editor's brush: strokes on a transparent canvas laid over the image (#paint-overlay).
// Events are delegated from the document, so a canvas the server replaces keeps working.
(() => {
  if (window.rewritingPainter) return;
  const colour = "#ff00ff";
  let drawing = null;

  const overlay = () => document.getElementById("paint-overlay");
  const strokes = canvas => canvas.strokes || (canvas.strokes = []);  // pictures before each stroke, for undo
  const brushWidth = canvas => {
    const control = document.getElementById("paint-brush");
    return control ? Number(control.value) : canvas.width / 20;  // in canvas pixels
  };
  const position = (canvas, event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  const line = (canvas, from, to) => {
    const context = canvas.getContext("2d");
    const width = brushWidth(canvas);
    context.strokeStyle = context.fillStyle = colour;
    context.lineWidth = width;
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    context.arc(to[0], to[1], width / 2, 0, 2 * Math.PI);
    context.fill();
    context.beginPath();
    context.moveTo(from[0], from[1]);
    context.lineTo(to[0], to[1]);
    context.stroke();
  };
  const snapshot = canvas => strokes(canvas).push(
    canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height));

  document.addEventListener("pointerdown", event => {
    const canvas = event.target;
    if (!(canvas instanceof HTMLCanvasElement) || canvas.id !== "paint-overlay" || event.button !== 0) return;
    event.preventDefault();
    snapshot(canvas);
    const point = position(canvas, event);
    drawing = { canvas, last: point };
    line(canvas, point, point);
    canvas.setPointerCapture(event.pointerId);
  });
  document.addEventListener("pointermove", event => {
    if (!drawing) return;
    const point = position(drawing.canvas, event);
    line(drawing.canvas, drawing.last, point);
    drawing.last = point;
  });
  const stop = () => { drawing = null; };
  document.addEventListener("pointerup", stop);
  document.addEventListener("pointercancel", stop);
  document.addEventListener("click", event => {
    const canvas = overlay();
    if (!canvas || !event.target) return;
    if (event.target.id === "paint-undo") {
      const before = strokes(canvas).pop();
      if (before) canvas.getContext("2d").putImageData(before, 0, 0);
    } else if (event.target.id === "paint-clear") {
      snapshot(canvas);
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    }
  });

  window.rewritingPainter = {
    // What is painted, for the server: {"image_id": N, "png": "data:image/png;base64,..."}; then a fresh canvas.
    take() {
      const canvas = overlay();
      if (!canvas) return "";
      const area = canvas.closest("[data-image-id]");
      const painted = JSON.stringify({ image_id: Number(area.dataset.imageId), png: canvas.toDataURL("image/png") });
      snapshot(canvas);
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      return painted;
    },
  };
})();
