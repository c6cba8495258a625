"""Board entry point: the rp2 port runs this after boot.py."""

import app

board = app.Board()
board.run()
