"""Online refinement inside the simulator: recommenders that keep learning from simulated users whose
interests shift. ``methods`` holds the ways to learn between rounds, ``metrics`` what a round
measured, ``study`` the whole study (``recsim-llm run experiments/configs/online_refine.yaml``), and
``twin`` the world PPO learns in."""
