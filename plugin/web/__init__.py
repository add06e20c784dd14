"""Web pages served by the service: the sandbox, the SMART app, the rule catalogue, and the
visit timeline they share (:mod:`plugin.web.timeline`, also drawn into audit reports).

:func:`plugin.web.install.install_web` mounts the pages on the application. This package
imports nothing itself, so the timeline can be used without loading the web stack.
"""
