"""Reference solutions of the stubs in student/, one file per stub file, the same interfaces.

Grade them: python -m student.grade --blocks solutions.student
"""
