// Tooltips for the ToDo accordion, set on its elements by id in both tabs.
(function () {
    const tips = {
        enabled: "ToDo: token downsampling. Self-attention keeps every query but takes keys and values from a downsampled copy of the image tokens: much faster at high resolution, no training needed.",
        factor: "Downsampling factor of the highest-resolution attention level. 0 = auto (about generated side / model's native side; off at or below native size). 1 = off. 2 keeps 1/4 of the keys.",
        factor_level2: "Factor for the second attention level. 0 = auto (SD1.5: half the first factor rounded down, so 2 only from about 2048 px, where the authors' demo keeps it off; SDXL: same as the first, since most SDXL attention sits there). 1 = off. Flux and other DiTs have one level: this factor does nothing there.",
        method: "How tokens are downsampled: nearest-exact (default, fastest: the centre token of each cell), nearest (the authors' demo: the top-left token, as fast), avg-pool, bilinear or max-pool.",
        start: "First part of the sampling steps to leave untouched, as a fraction (0 = from the first step).",
        stop: "Stop downsampling after this fraction of the steps (1 = until the end). Stopping at 0.6-0.8 keeps more fine detail.",
        hires_mode: "Hires fix pass: same settings, its own factor, off, or only the hires pass (where the speed-up is largest).",
        hires_factor: "First-level factor for the hires pass when 'Hires pass' is 'own factor'. 0 = auto from the hires size.",
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

    onUiLoaded(setTips);
})();
