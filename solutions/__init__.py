"""Reference solutions of the course kit, kept apart from what the students write.

solutions/student/ solves the stubs of student/, file by file; the tests grade it with the same
grader as the students' code, so a stale solution fails. Instructors: see student/README.md.
"""
