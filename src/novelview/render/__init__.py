"""Meshes -> multi-view datasets (`novelview data render`; needs the [render] extra and EGL).

* :mod:`novelview.render.mesh` -- load + normalise meshes with trimesh
* :mod:`novelview.render.gl` -- headless moderngl/EGL rasteriser (RGBA, depth, mask)
* :mod:`novelview.render.dataset` -- the command: parallel, resumable, failures listed not fatal

Importing this package needs neither trimesh nor moderngl; they load when a mesh is rendered.
"""
