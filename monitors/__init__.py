"""immortal's built-in monitors, registered through the ``immortal.monitors`` entry point
group like any third-party monitor. They import only immortal's public names."""
