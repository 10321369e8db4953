"""Home: what induction heads are, the phase change, the ICL score, and a guided path through the pages."""

from __future__ import annotations

import streamlit as st

from icl_core.analysis.phase import unigram_entropy_nats
from icl_core.analysis.summary import describe_phase_change
from icl_core.errors import ICLError
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_FORMULA, ICL_LATE_TOKEN
from ui import landscape, layout, runs, state
from ui.quote import user_text

state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("Induction heads and in-context learning")
st.markdown(
    "An interactive companion to Olsson et al. (2022), *In-context Learning and Induction Heads*. "
    "Every model here is a tiny **attention-only transformer** reading raw bytes, trained on Python source "
    "code. You can watch, at any point of training, what its attention heads do, when in-context learning "
    "switches on, and what breaks when a head is removed."
)

left, right = layout.panels("tour", [3, 2], gap="large")
with left:
    st.header("1. What is an induction head?")
    st.markdown(
        """
A transformer predicts the next token. A very useful trick for that is:

> *If the sequence earlier contained* **[A][B]**, *and the current token is* **[A]** *again, predict* **[B]**.

```
 … [A][B] … … … [A] → [B]
```

An **induction head** is an attention head that implements this trick. At the second **[A]** it attends
*not* to the earlier **[A]**, but to the token **right after it**, **[B]**, and copies it into the
prediction. It needs help from an earlier **previous-token head**, which writes "the token before me was
[A]" into every position, so that the induction head can search for "the position whose *previous*
token is [A]". That is why induction heads need **two layers** (or a shortcut called *smeared keys*).

- **Prefix-matching score** of a head: on random tokens repeated several times, how much attention goes
  to the token right after an earlier occurrence of the current token (1 = all of it).
- **Previous-token score**: how much attention goes to the token just before.
- **Copying score**: whether the head's output raises the logit of the token it attends to.
"""
    )
with right:
    st.header("2. The phase change")
    st.markdown(
        f"""
Early in training a model only uses the last few tokens. Then, over a short stretch of training,
**four things happen at once** (Olsson et al.):

1. induction heads form (prefix-matching scores jump);
2. the **ICL score** drops: later tokens become much easier to predict than early ones;
3. the training loss shows a small **bump**;
4. the trajectory of the model in the per-token-loss PCA plane **turns sharply**.

In this app's runs, 1 and 2 are measured and tested on code and on prose; 4 holds on code for the 3-layer
and the smeared-key 2-layer runs (on prose for the 3-layer one), not clearly for the plain 2-layer one; 3, the
bump, shows in the plain 2-layer and the smeared-key 1-layer runs (the held-out loss rises 0.05–0.08 nats above
its trend, over 3x the jitter around it), not in the 3-layer or the smeared-key 2-layer run. Where exactly the
window ends depends on which random tokens probe the heads (another draw moves it by up to a quarter of a
decade); where it starts does not.

A **one-layer** attention-only model shows none of this: it cannot build an induction head.

**Before all this, an early stage.** In the first ~100k tokens, while a model is still learning how often
each byte occurs, the ICL score of every run (the 1-layer one too) rises to +0.1…+0.24 nats, falls to
−0.15…−0.21 and settles. That swing is not in-context learning: the model's predictions still depend on the
absolute position (its positional embedding), and when every position is given position 50's embedding the
swing vanishes (within one standard error at every early snapshot of the 1- and 2-layer runs, on code and on
prose). The charts shade that stage grey: it
lasts until the held-out loss reaches the byte frequencies' entropy ({unigram_entropy_nats():.2f} nats).
"""
    )
    st.header("3. The ICL score")
    icl_display = (  # the formula as LaTeX, from the same token indices as every other page
        rf"$$\text{{ICL score}} = \overline{{\text{{loss}}}}(\text{{token }}{ICL_LATE_TOKEN})"
        rf" - \overline{{\text{{loss}}}}(\text{{token }}{ICL_EARLY_TOKEN})$$"
    )
    st.markdown(
        rf"""
{icl_display}

averaged over held-out text. **Sign convention used everywhere in this app: {ICL_FORMULA},
so more negative = more in-context learning.** (The paper states the sign both ways in places.)
In the paper, its size is under ~0.15 nats before the phase change and ~0.4 nats after. In this app's
byte-level runs a token is a byte, so token {ICL_LATE_TOKEN} has seen ~{ICL_LATE_TOKEN} characters, not
~2,000, and the scores are smaller. Each snapshot's score is measured on two held-out sets, Python code
(8,192 examples) and English prose (2,048), and shown with its standard error.
"""
    )
    finals = state.final_icl_by_layers()
    if finals:
        st.markdown(
            "Final ICL scores of the shipped runs (± one standard error):\n"
            + "\n".join(f"- **{n} layer{'s' * (n > 1)}**: {text}" for n, text in finals.items())
        )

st.header("4. Stages, seen from the loss landscape")
st.markdown(landscape.LLC_EXPLAINED + "\n\n" + landscape.STAGES_EXPLAINED + "\n\n" + landscape.LLC_ON_SHIPPED_RUNS)

st.header("5. A guided path (about 15 minutes in class)")
steps = [
    (
        "pages/phase_change.py",
        "Phase change",
        "Pick the 2-layer run and press ▶ Play on the timeline (or drag it; the arrow keys step one snapshot): "
        "the red rule sweeps through training in the browser, at up to 30 snapshots a second. Across the "
        "orange band the prefix-matching score of one layer-1 head shoots up and the ICL score falls with it, "
        "then both stay flat for the rest of training (the linear axis shows it as the paper does). Pause where "
        "you want to talk: every page follows that step. Then switch the sidebar "
        "to the 1-layer run: no band, and across the 2-layer run's band its ICL score does not move. The "
        "3-layer run changes like the 2-layer one; with smeared keys the change comes earlier, and even the "
        "1-layer smeared-key run forms an induction head.",
    ),
    (
        "pages/attention.py",
        "Attention explorer",
        "Choose the preset *Repeated random tokens* at the last step. In the second copy, the induction head's "
        "heatmap shows an off-diagonal stripe on the orange-outlined cells: it looks at the token after the "
        "previous occurrence. Layer-0 heads sit one cell left of the diagonal: previous-token heads. Then press "
        "▶ Play in *Over training*: from the first snapshot, watch the induction head's strip and heatmap "
        "light up on the orange targets at the phase change, and the right next token climb to the top of the "
        "predictions. Try your own text, or the case-flipped repeat.",
    ),
    (
        "pages/ablation.py",
        "Ablation",
        "Press *Ablate induction heads*: the loss on the second copy of a repeated sequence jumps back up to "
        "the first copy's level and the ICL score shrinks. Press *Ablate a random other head* a few times: "
        "most heads matter far less; the exceptions are the layer-0 heads whose output the induction head's "
        "keys read (the previous-token head above all), the first half of the circuit.",
    ),
    (
        "pages/circuits.py",
        "Circuits",
        "Read the mechanism off the weights: the induction head K-composes with the previous-token head (its "
        "keys read what that head wrote), its QK circuit through that head shows a bright diagonal, and its OV "
        "circuit copies tokens. Slide the step across the phase change and watch the composition score rise.",
    ),
    (
        "pages/analysis.py",
        "Head attribution",
        "Which heads carry the phase change? Ablate each head alone: with pattern-preserving ablation (each "
        "head's own effect) removing the induction head costs the most ICL; with zero ablation layer-0 heads "
        "cost about as much, or more (zeroing a head also removes what later heads read from it). The "
        "attribution of the phase change to heads (Olsson et al.'s before-and-after vector) agrees: "
        "pattern-preserving, it points at the induction head; zero or mean, at the layer-0 heads that feed it "
        "(the previous-token head first), then the induction head. The fuzzy probe shows the induction head "
        "also copies near-matches.",
    ),
    (
        "pages/models.py",
        "Models",
        "See all runs side by side with their final scores, or download one from the Hugging Face Hub.",
    ),
    (
        "pages/train.py",
        "Train",
        "Train your own tiny model (minutes on a CPU) and explore it on the other pages.",
    ),
]
for i, (path, title, text) in enumerate(steps, start=1):
    with st.container(horizontal=True, wrap=False, vertical_alignment="center"):  # the link keeps its width
        st.page_link(path, label=f"{i}. {title}", icon=":material/arrow_forward:")
        st.markdown(text)

st.header("6. The runs in this app")
sel = state.current_selection()
if sel is None:
    st.info("No run is available yet: train one on the Train page or download one on the Models page.")
else:
    try:
        window = runs.phase_window_of(sel.run.path)
    except ICLError as exc:
        window = None
        st.error(user_text(exc, 500))
    cfg = sel.snapshot.model_config
    kind = f"{cfg.n_layers}-layer attention-only, {cfg.n_heads} heads per layer" + (
        ", smeared keys" if cfg.smeared_keys else ""
    )
    when = describe_phase_change(window, sel.snapshots)
    st.markdown(f"Selected in the sidebar: **{sel.run.name}**: {kind}; {len(sel.snapshots)} snapshots; {when}.")
    st.caption(
        "The sidebar's run and training step are shared by every page, and kept in the page's address "
        "(`?run=...&step=...`; the Attention page adds its text): copy it to share exactly this view."
    )
