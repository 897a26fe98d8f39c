// Tooltips for the ToDo accordion, set on its elements by id in both tabs; and the hires controls of txt2img shown
// only while Hires. fix is ticked (they apply to the hires pass only).
(function () {
    const tips = {
        enabled: "ToDo: token downsampling. Self-attention keeps every query but takes keys and values from a downsampled copy of the image tokens: much faster at high resolution, no training needed. Opening this accordion ticks it (ToDo on); the checkbox alone switches ToDo on or off.",
        factor: "Downsampling factor of the highest-resolution attention level. 0 = auto (about generated side / model's native side; off at or below native size). 1 = off. 2 keeps 1/4 of the keys.",
        factor_level2: "Factor for the second attention level. 0 = auto (SD1.5: half the first factor rounded down, so 2 only from about 2048 px, where the authors' demo keeps it off; SDXL: same as the first, since most SDXL attention sits there). 1 = off. Flux and other DiTs have one level: this factor does nothing there.",
        method: "How tokens are downsampled: nearest-exact (default, fastest: the centre token of each cell), nearest (the authors' demo: the top-left token, as fast), avg-pool, bilinear or max-pool.",
        start: "First part of the sampling steps to leave untouched, as a fraction (0 = from the first step).",
        stop: "Stop downsampling after this fraction of the steps (1 = until the end). Stopping at 0.6-0.8 keeps more fine detail.",
        hires_mode: "Hires fix pass: same settings, its own factor, off, or only the hires pass (where the speed-up is largest).",
        hires_factor: "First-level factor for the hires pass when 'Hires pass' is 'own factor'. 0 = auto from the hires size. 1 = off.",
    };

    function setTips() {
        for (const tab of ["txt2img", "img2img"]) {
            for (const [key, tip] of Object.entries(tips)) {
                const element = gradioApp().getElementById(`script_${tab}_todo_${key}`);
                if (element) {
                    element.title = tip;
                }
            }
        }
    }

    // Hires. fix is an InputAccordion with elem_id "txt2img_hr" (A1111 1.10, Forge, reForge, Forge Neo): its value
    // lives in the hidden checkbox "#txt2img_hr-checkbox input", which the webui updates (with an input event) when
    // the accordion or its visible checkbox is toggled, or when an infotext is pasted.
    const HIRES_VALUE = "#txt2img_hr-checkbox input";

    function syncHiresRow() {
        const hires = gradioApp().querySelector(HIRES_VALUE);
        const mode = gradioApp().getElementById("script_txt2img_todo_hires_mode");
        const row = mode ? mode.closest(".todo-row") : null;
        if (hires && row) { // either missing (another webui, another layout): leave the row as it is
            row.style.display = hires.checked ? "" : "none";
        }
    }

    function onHiresEvent(event) {
        const target = event.target;
        if (target && target.closest && target.closest("#txt2img_hr, #txt2img_hr-checkbox")) {
            setTimeout(syncHiresRow, 0); // after the webui's own handlers have set the value
        }
    }

    onUiLoaded(function () {
        setTips();
        syncHiresRow();
        for (const kind of ["input", "change"]) {
            gradioApp().addEventListener(kind, onHiresEvent);
        }
    });
})();
