"""The model in Mesa's own SolaraViz (not the trainer UI): `solara run examples/mesa_app.py`.

Organizations sit in the model's Mesa discrete-space Network (`model.space`), so SolaraViz's
space component draws the ecosystem; Reset rebuilds the model through Mesa's own path (a fresh
seed, the sliders' values as dotted scenario keys).
"""

import warnings

from mesa.visualization import SolaraViz, SpaceRenderer, make_plot_component
from mesa.visualization.components import AgentPortrayalStyle

from sim.model import AllianceModel

warnings.filterwarnings("ignore", category=FutureWarning)


def portray(agent):
    green = agent.mindset == "abundance"
    return AgentPortrayalStyle(color="#1a9850" if green else "#d73027", size=40)


model_params = {
    "mindset.abundance_share": {"type": "SliderFloat", "value": 0.7, "label": "abundance share",
                                "min": 0.0, "max": 1.0, "step": 0.05},
    "patience.horizon": {"type": "SliderInt", "value": 60, "label": "patience horizon",
                         "min": 5, "max": 200, "step": 5},
}

model = AllianceModel(**{"mindset.abundance_share": 0.7, "patience.horizon": 60})
renderer = SpaceRenderer(model, backend="matplotlib").setup_agents(portray)
renderer.draw_structure()
renderer.draw_agents()
page = SolaraViz(model, renderer, components=[make_plot_component(["mean_trust",
                                                                   "share_spiral_in"])],
                 model_params=model_params, name="alliance-spiral in Mesa's SolaraViz")
