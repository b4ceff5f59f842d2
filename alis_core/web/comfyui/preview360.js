// ComfyUI frontend extension: the ALIS Preview 360 node shows its sky in a three.js 360° viewer.
//
// ComfyUI serves the pack's WEB_DIRECTORY (alis_core/web/) at /extensions/<pack>/, so this file is
// /extensions/<pack>/comfyui/preview360.js and the vendored three.js (alis_core/web/three/, the same
// files the `alis view` page inlines) is "../three/three.module.js" from here.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import * as THREE from "../three/three.module.js";
import { createSkyViewer } from "../sky_viewer.js";

const NODE_ID = "ALISPreview360";
const UI_KEY = "alis_360";  // nodes/preview.py UI_KEY

function viewUrl(file) {
	const q = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "",
		type: file.type ?? "temp", rand: String(Math.random()) });
	return api.apiURL(`/view?${q}`);
}

function ensureViewer(node) {
	if (node.alisSky) return node.alisSky;
	const box = document.createElement("div");
	box.style.cssText = "width: 100%; height: 100%; min-height: 200px; position: relative; cursor: grab;";
	node.addDOMWidget("alis_360_view", "alis_360_view", box, { serialize: false, hideOnZoom: false });
	node.alisSky = createSkyViewer(THREE, box, { yaw: 0, pitch: 0, fov: 75 });
	if (node.size[0] < 420 || node.size[1] < 320) node.setSize([Math.max(node.size[0], 420), Math.max(node.size[1], 320)]);
	return node.alisSky;
}

app.registerExtension({
	name: "alis.preview360",
	async beforeRegisterNodeDef(nodeType, nodeData) {
		if (nodeData?.name !== NODE_ID) return;
		const onExecuted = nodeType.prototype.onExecuted;
		nodeType.prototype.onExecuted = function (message) {
			onExecuted?.apply(this, arguments);
			const files = message?.[UI_KEY];
			if (!files?.length) return;
			ensureViewer(this).load(viewUrl(files[0])).catch((e) => console.error("ALIS Preview 360:", e));
		};
		const onRemoved = nodeType.prototype.onRemoved;
		nodeType.prototype.onRemoved = function () {
			this.alisSky?.dispose();
			this.alisSky = null;
			return onRemoved?.apply(this, arguments);
		};
	},
});
