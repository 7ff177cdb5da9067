"""The trainer UI (Solara): page.py the page, session.py the tested session controller,
stories.py the guided stories, figures.py the SVG pictures. Solara is imported only in page.py."""
