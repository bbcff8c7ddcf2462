"""The schema: typed models, the engine and session factory, Alembic migrations.

Nothing here imports api/, worker/ or tasks/.
"""
