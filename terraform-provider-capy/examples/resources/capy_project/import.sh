# By the project's id. The server never returns database_url: keep it in the
# configuration; the first apply after import sends it again (an in-place update).
tofu import capy_project.app prj_5f2c81d04be97a13
