"""The build: one module per phase (enumerate, scan, plan, materialize, finalize), each taking the
base (``base``: nothing for a fresh build, the finished build for ``--append`` / ``--retry``);
``run`` drives them; ``request`` holds the request types, refusals and log; ``repair`` checks a
finished OUT against its last commit. Import from the modules (``pipelines.build.run.run_build``,
``pipelines.build.request.BuildRequest``): this file imports nothing, so a phase never loads the driver."""
