// A 360° sky viewer on three.js: drag to look around, wheel to zoom.
// Used by the standalone page (alis_core/web/viewer.html) and the ComfyUI node (comfyui/preview360.js).
//
// Directions are Blender's (Z up): yaw is the azimuth counter-clockwise from +X, pitch the elevation,
// both in degrees, so yaw = a sun's azimuth looks at it. three.js is Y up with glTF's axes
// (three x, y, z = Blender x, z, -y); its equirect lookup then reads an equirect whose centre column
// is Blender +X, the convention of alis_core.projection, as it is.

export function createSkyViewer(THREE, container, options = {}) {
	const view = { yaw: options.yaw ?? 0, pitch: options.pitch ?? 0, fov: options.fov ?? 75 };
	const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
	renderer.setPixelRatio(window.devicePixelRatio || 1);
	renderer.domElement.style.display = "block";
	renderer.domElement.style.touchAction = "none";
	container.appendChild(renderer.domElement);
	const scene = new THREE.Scene();
	const camera = new THREE.PerspectiveCamera(view.fov, 1, 0.1, 10);
	camera.rotation.order = "YXZ";
	let texture = null;
	let frames = 0;

	function size() {
		const w = Math.max(1, container.clientWidth), h = Math.max(1, container.clientHeight);
		renderer.setSize(w, h, false);
		renderer.domElement.style.width = w + "px";
		renderer.domElement.style.height = h + "px";
		camera.aspect = w / h;
	}

	function render() {
		view.pitch = Math.max(-90, Math.min(90, view.pitch));
		view.fov = Math.max(15, Math.min(110, view.fov));
		camera.fov = view.fov;
		// three.js cameras look along -Z; rotation.y = yaw - 90° turns that to Blender +X at yaw 0.
		camera.rotation.y = THREE.MathUtils.degToRad(view.yaw - 90);
		camera.rotation.x = THREE.MathUtils.degToRad(view.pitch);
		camera.updateProjectionMatrix();
		renderer.render(scene, camera);
		if (texture && frames++ === 0 && options.onFirstFrame) options.onFirstFrame();
		if (options.onView) options.onView(view);
	}

	let drag = null;
	renderer.domElement.addEventListener("pointerdown", (e) => {
		drag = { x: e.clientX, y: e.clientY, yaw: view.yaw, pitch: view.pitch };
		renderer.domElement.setPointerCapture(e.pointerId);
		e.preventDefault();
	});
	renderer.domElement.addEventListener("pointermove", (e) => {
		if (!drag) return;
		const perPixel = view.fov / Math.max(1, container.clientHeight);
		view.yaw = drag.yaw + (e.clientX - drag.x) * perPixel;  // the sky follows the pointer
		view.pitch = drag.pitch + (e.clientY - drag.y) * perPixel;
		render();
		e.preventDefault();
	});
	const end = () => { drag = null; };
	renderer.domElement.addEventListener("pointerup", end);
	renderer.domElement.addEventListener("pointercancel", end);
	renderer.domElement.addEventListener("wheel", (e) => {
		view.fov *= Math.exp(e.deltaY * 0.001);
		render();
		e.preventDefault();
		e.stopPropagation();
	}, { passive: false });
	new ResizeObserver(() => { size(); render(); }).observe(container);
	size();

	return {
		view, renderer,
		async load(url) {
			const t = await new THREE.TextureLoader().loadAsync(url);
			t.colorSpace = THREE.SRGBColorSpace;
			t.mapping = THREE.EquirectangularReflectionMapping;
			if (texture) texture.dispose();
			texture = t;
			scene.background = t;
			frames = 0;
			render();
		},
		setView(v) { Object.assign(view, v); render(); },
		render,
		dispose() { renderer.dispose(); if (texture) texture.dispose(); renderer.domElement.remove(); },
	};
}
